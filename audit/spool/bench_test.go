package spool

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// Benchmarks of the spool beside raw baselines of the same record size,
// on the folder named by VRAMSEAL_BENCH_DIR (the work disk; a temporary
// folder otherwise). scripts/bench.d/20-audit.sh runs them and prints a
// table.

func benchDir(b *testing.B) string {
	base := os.Getenv("VRAMSEAL_BENCH_DIR")
	if base == "" {
		return b.TempDir()
	}
	d, err := os.MkdirTemp(base, "spool-bench-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func benchEntry(i int, sev audit.Severity) Entry {
	e := entry(i, sev)
	e.ID = audit.NewID()
	return e
}

// frameSize is the size of one benchmark record on disk.
func frameSize() int {
	e := benchEntry(1, audit.SeverityInfo)
	b, _, _ := appendFrame(nil, 1, [32]byte{}, &e)
	return len(b)
}

func p99(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)*99/100]
}

func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// BenchmarkEmit: non-CRITICAL events appended from one goroutine as fast as
// the writer takes them (the producer pauses, untimed, when the queue is
// three quarters full, so nothing is lost); events/s counts until the last
// record is on disk and fsynced. p99-emit-µs is the latency of Append.
func BenchmarkEmit(b *testing.B) {
	l, _ := quietLogger()
	s, err := Open(Config{Dir: benchDir(b), Logger: l, CheckpointKey: testKey, QueueSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	ents := make([]Entry, b.N)
	for i := range ents {
		ents[i] = benchEntry(i, audit.SeverityInfo)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	var last audit.Receipt
	high := int64(s.cfg.QueueSize * 3 / 4)
	for i := range ents {
		for s.queued.Load() > high {
			time.Sleep(20 * time.Microsecond)
		}
		t0 := time.Now()
		last = s.Append(ents[i], false)
		lat[i] = time.Since(t0)
	}
	if err := audit.WaitDurable(context.Background(), last, time.Minute); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	lost := s.Stats().Lost[audit.LossQueueFull]
	_ = s.Close(context.Background())
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(p99(lat).Nanoseconds())/1e3, "p99-emit-µs")
	b.ReportMetric(float64(lost), "lost")
}

// BenchmarkRawAppend is the baseline of BenchmarkEmit: one write(2) per
// record of the same size, no framing, no hashing, one fsync at the end.
func BenchmarkRawAppend(b *testing.B) {
	lat, elapsed := rawAppend(b, false)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(p99(lat).Nanoseconds())/1e3, "p99-emit-µs")
}

// rawAppend writes b.N records of a spool record's size to a file opened
// with O_APPEND, one write(2) each, followed by an fsync after each record
// (fsyncEach) or once at the end. It returns each record's latency and the
// time it all took.
func rawAppend(b *testing.B, fsyncEach bool) ([]time.Duration, time.Duration) {
	f, err := os.OpenFile(filepath.Join(benchDir(b), "raw"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	rec := make([]byte, frameSize())
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := f.Write(rec); err != nil {
			b.Fatal(err)
		}
		if fsyncEach {
			if err := f.Sync(); err != nil {
				b.Fatal(err)
			}
		}
		lat[i] = time.Since(t0)
	}
	if !fsyncEach {
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
	}
	return lat, time.Since(start)
}

// BenchmarkCriticalDurable: one CRITICAL event at a time, timed from Append
// until its Receipt says it is fsynced.
func BenchmarkCriticalDurable(b *testing.B) {
	l, _ := quietLogger()
	s, err := Open(Config{Dir: benchDir(b), Logger: l, CheckpointKey: testKey})
	if err != nil {
		b.Fatal(err)
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := benchEntry(i, audit.SeverityCritical)
		t0 := time.Now()
		if err := audit.WaitDurable(context.Background(), s.Append(e, true), 5*time.Second); err != nil {
			b.Fatal(err)
		}
		lat[i] = time.Since(t0)
	}
	b.StopTimer()
	_ = s.Close(context.Background())
	b.ReportMetric(float64(p50(lat).Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(p99(lat).Nanoseconds())/1e3, "p99-µs")
}

// BenchmarkRawAppendFsync is the baseline of BenchmarkCriticalDurable: a
// write(2) of the same size and an fsync.
func BenchmarkRawAppendFsync(b *testing.B) {
	lat, _ := rawAppend(b, true)
	b.ReportMetric(float64(p50(lat).Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(p99(lat).Nanoseconds())/1e3, "p99-µs")
}
