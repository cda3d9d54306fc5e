package otel

import (
	"context"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

// BenchmarkPipelineEmit: Pipeline.Emit of non-CRITICAL events inside a
// span, the spool on disk (VRAMSEAL_BENCH_DIR, else a temporary folder) and
// the shipper reading behind it (OTEL_LOGS_EXPORTER=none, so no collector
// is needed). The producer pauses, untimed, when the queue is three quarters
// full; events/s counts until the last record is fsynced.
func BenchmarkPipelineEmit(b *testing.B) {
	dir := b.TempDir()
	if base := os.Getenv("VRAMSEAL_BENCH_DIR"); base != "" {
		d, err := os.MkdirTemp(base, "pipeline-bench-")
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	log, _ := testLogger()
	const queue = 1 << 16
	p, err := NewPipeline(context.Background(), Config{Spool: spool.Config{Dir: dir, QueueSize: queue, CheckpointKey: make([]byte, 32)}, WorkerID: "node-a", Logger: log,
		Counters: audit.NewCounters(),
		Getenv:   envWith(map[string]string{"OTEL_LOGS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"})})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx, span := p.TracerProvider().Tracer("bench").Start(context.Background(), "op")
	defer span.End()
	evs := make([]audit.Event, b.N)
	now := time.Now()
	for i := range evs {
		evs[i] = audit.VRAMAllocated{Header: audit.NewHeader(now, "node-a"), ShardID: "llama-00001", GPUDevice: 1, RequestedBytes: 1 << 30, UsedAfter: 3 << 30}
	}
	lat := make([]time.Duration, b.N)
	b.ResetTimer()
	start := time.Now()
	var last audit.Receipt
	for i, ev := range evs {
		for i%256 == 0 && queuedOver(p, queue*3/4) {
			time.Sleep(20 * time.Microsecond)
		}
		t0 := time.Now()
		last = p.Emit(ctx, ev)
		lat[i] = time.Since(t0)
	}
	if err := audit.WaitDurable(context.Background(), last, time.Minute); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1e3, "p99-emit-µs")
	b.ReportMetric(float64(p.Stats().Lost["queue_full"]), "lost")
}

// queuedOver reports whether more than n events wait in the spool's queue.
func queuedOver(p *Pipeline, n int) bool { return p.spool.Queued() > n }
