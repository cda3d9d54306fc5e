package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/testenv"
)

// soakFor is the soak's duration: 60s in make test, SOAK_DURATION in make soak.
var soakFor = flag.Duration("soak", 60*time.Second, "how long TestSoak runs (make soak sets SOAK_DURATION)")

// The soak's shape.
const (
	soakGPUs     = 8
	soakShards   = 64
	soakShardLen = 256 << 10
	// soakChurnGPUs: seals, leases and attachments churn on GPUs 0..5;
	// faults go to GPUs 6 and 7.
	soakChurnGPUs = 6
	// Growth bounds from the end of the warm-up to the end (medians of
	// ten one-second samples each).
	soakRSSBound        = 24 << 20
	soakFDBound         = 8
	soakGoroutinesBound = 16
)

// sampleRow is one second's reading of the agent's process.
type sampleRow struct {
	at                   time.Duration
	rss, fds, goroutines int
}

// readProc reads the agent's resident memory and open descriptors.
func readProc(pid int) (rss, fds int) {
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		if m := regexp.MustCompile(`VmRSS:\s+(\d+) kB`).FindSubmatch(b); m != nil {
			kb, _ := strconv.Atoi(string(m[1]))
			rss = kb << 10
		}
	}
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return rss, len(ents)
}

func median(xs []int) int {
	s := append([]int(nil), xs...)
	for i := range s { // small: insertion sort
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

// window is the medians of rss, fds and goroutines over the samples in [from, to).
func window(rows []sampleRow, from, to time.Duration) [3]int {
	var r, f, g []int
	for _, s := range rows {
		if s.at >= from && s.at < to {
			r, f, g = append(r, s.rss), append(f, s.fds), append(g, s.goroutines)
		}
	}
	return [3]int{median(r), median(f), median(g)}
}

// soakConfig writes the soak's configuration, with the extra declared
// shard "hup" when withHup (the reloads add and remove it).
func soakConfig(t *testing.T, e *env, hsock string, withHup bool) {
	var b strings.Builder
	fmt.Fprintf(&b, "worker_id: soak-node\ndevice: sim\nsim: {gpus: %d, memory_bytes: 1073741824}\nseal_secret_file: %s\nmodel_dirs: [%s]\n",
		soakGPUs, filepath.Join(e.dir, "seal.key"), e.models)
	fmt.Fprintf(&b, "audit: {spool_dir: %s, segment_bytes: 4194304}\nhandoff: {socket: %s, shutdown_wait: 1s}\nverify: {interval: 1s, jitter: 0.1}\nshards:\n",
		filepath.Join(e.dir, "spool"), hsock)
	for i := range soakShards {
		fmt.Fprintf(&b, "  - {id: s%02d, path: models/s%02d.bin, gpu: %d}\n", i, i, i%soakGPUs)
	}
	if withHup {
		b.WriteString("  - {id: hup, path: models/hup.bin, gpu: 0}\n")
	}
	tmp := e.config + ".new"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
	if err := os.Rename(tmp, e.config); err != nil {
		t.Error(err)
	}
}

// every runs fn every d (with ±25% jitter) until ctx ends.
func every(ctx context.Context, wg *sync.WaitGroup, d time.Duration, seed uint64, fn func(rng *rand.Rand)) {
	wg.Go(func() {
		rng := rand.New(rand.NewPCG(seed, 23))
		for {
			j := time.Duration(float64(d) * (0.75 + rng.Float64()/2))
			select {
			case <-ctx.Done():
				return
			case <-time.After(j):
			}
			fn(rng)
		}
	})
}

// sealedMemfd is engine memory to attach: a memfd sealed against
// shrinking and growing.
func sealedMemfd(n int, seed byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("soak-engine", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "soak-engine")
	if _, err := f.Write(bytes.Repeat([]byte{seed}, n)); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// TestSoak runs the agent on 8 simulated GPUs with 64 declared shards
// verified every second for -soak (60s by default; make soak runs it for
// SOAK_DURATION) while seals and releases loop, consumer leases and
// attachments churn, SIGHUP reloads add and remove a shard, the
// OpenTelemetry Collector is stopped and restarted every few seconds and
// debug faults strike at random. At the end every record of the spool is
// in the collector's files (log.record.uid; duplicates counted), audit
// verify finds both intact, and the agent's RSS, descriptors and
// goroutines grew less than the stated bounds from the end of the warm-up
// (the first minute, or the first quarter of a shorter soak) to the end.
// The table is logged and written to $TMPDIR/vramseal-soak.txt.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak runs for a minute at least")
	}
	otelcol := testenv.Tool(t, "VRAMSEAL_OTELCOL")
	d := *soakFor
	warm := min(time.Minute, d/4)
	e := newEnv(t)
	if bin := os.Getenv("VRAMSEAL_AGENT_BIN"); bin != "" {
		e.bin = bin
	}
	for i := range soakShards {
		e.shardFile(fmt.Sprintf("s%02d.bin", i), soakShardLen, byte(i))
	}
	e.shardFile("hup.bin", soakShardLen, 200)
	churnFile := e.shardFile("churn.bin", soakShardLen, 201)
	hsock := filepath.Join(e.dir, "run", "handoff.sock")
	soakConfig(t, e, hsock, false)

	col := newSoakCollector(t, otelcol)
	col.start()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", col.endpoint())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	e.start("--log.level", "warn")
	ctx := context.Background()
	c := client.NewControl(e.socket, 30*time.Second)
	defer c.CloseIdleConnections()
	e.waitFor("readiness", func() bool { st, err := c.Status(ctx); return err == nil && st.Ready })
	pid := e.cmd.Process.Pid

	stats := &loadStats{ops: map[string]*opStats{}}
	op := func(name string, fn func() error) error {
		start := time.Now()
		err := fn()
		stats.add(name, time.Since(start), err)
		return err
	}
	faults := map[string]int{}
	var fmu sync.Mutex
	fault := func(name string) { fmu.Lock(); faults[name]++; fmu.Unlock() }

	sctx, stop := context.WithTimeout(ctx, d)
	defer stop()
	var wg sync.WaitGroup
	var rows []sampleRow
	begin := time.Now()
	wg.Go(func() { // the sampler
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-tick.C:
			}
			rss, fds := readProc(pid)
			rows = append(rows, sampleRow{at: time.Since(begin), rss: rss, fds: fds, goroutines: int(e.sample("go_goroutines", ""))})
		}
	})
	n := 0
	every(sctx, &wg, 150*time.Millisecond, 1, func(rng *rand.Rand) { // seal and release
		n++
		id := fmt.Sprintf("churn-%d", n)
		if op("seal", func() error {
			_, err := c.Seal(ctx, client.SealRequest{ID: id, Path: churnFile, GPU: rng.IntN(soakChurnGPUs)})
			return err
		}) == nil {
			_ = op("release", func() error { _, err := c.Release(ctx, id, false); return err })
		}
	})
	every(sctx, &wg, 100*time.Millisecond, 2, func(rng *rand.Rand) { // consumer leases
		id := fmt.Sprintf("s%02d", rng.IntN(soakShards/soakGPUs)*soakGPUs+rng.IntN(soakChurnGPUs))
		_ = op("open", func() error {
			cc, err := client.DialConsumer(ctx, hsock)
			if err != nil {
				return err
			}
			defer cc.Close()
			l, err := cc.Open(ctx, id)
			if err != nil {
				return err
			}
			m, err := l.Map()
			if err == nil {
				_ = m[rng.IntN(len(m))]
				err = client.Unmap(m)
			}
			if cerr := l.Close(ctx); err == nil {
				err = cerr
			}
			return err
		})
	})
	na := 0
	every(sctx, &wg, 250*time.Millisecond, 3, func(rng *rand.Rand) { // attachments
		na++
		id := fmt.Sprintf("att-%d", na)
		_ = op("attach", func() error {
			mem, err := sealedMemfd(64<<10, byte(na))
			if err != nil {
				return err
			}
			defer mem.Close()
			cc, err := client.DialConsumer(ctx, hsock)
			if err != nil {
				return err
			}
			defer cc.Close() // every other one ends with its owner's connection
			a, err := cc.Attach(ctx, id, mem, client.AttachOptions{GPU: rng.IntN(soakChurnGPUs)})
			if err != nil || na%2 == 0 {
				return err
			}
			return a.Detach(ctx)
		})
	})
	hup := false
	every(sctx, &wg, 5*time.Second, 4, func(*rand.Rand) { // reloads
		hup = !hup
		soakConfig(t, e, hsock, hup)
		_ = e.cmd.Process.Signal(syscall.SIGHUP)
		fault("SIGHUP reload (adds or removes a declared shard)")
	})
	every(sctx, &wg, 4*time.Second, 5, func(rng *rand.Rand) { // the collector
		col.stop()
		fault("collector stopped and restarted")
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
		col.start()
	})
	nf := 0
	every(sctx, &wg, 2*time.Second, 6, func(rng *rand.Rand) { // debug faults
		nf++
		start := time.Now()
		switch rng.IntN(3) {
		case 0: // a bit flip in a shard sealed for it, on GPU 7
			id := fmt.Sprintf("victim-%d", nf)
			if _, err := c.Seal(ctx, client.SealRequest{ID: id, Path: churnFile, GPU: 7}); err != nil {
				stats.add("fault", time.Since(start), err)
				return
			}
			_, err := c.Debug(ctx, "corrupt", client.CorruptRequest{ID: id, Offset: uint64(rng.IntN(soakShardLen)), Bit: uint(rng.IntN(8))})
			if err == nil {
				var r client.VerifyResponse
				if r, err = c.Verify(ctx, id); err == nil && (r.Intact || len(r.Results) != 1 || r.Results[0].Result != "digest_mismatch") {
					err = fmt.Errorf("corrupted %s: %+v", id, r.Results)
				}
			}
			if _, rerr := c.Release(ctx, id, true); err == nil {
				err = rerr
			}
			stats.add("fault", time.Since(start), err)
			fault("bit flip (debug corrupt, CRITICAL digest_mismatch)")
		case 1:
			_, err := c.Debug(ctx, "ecc", client.ECCRequest{GPU: 6 + rng.IntN(2), Correctable: 3, Uncorrectable: 1})
			stats.add("fault", time.Since(start), err)
			fault("ECC errors (debug ecc)")
		default:
			g := 6 + rng.IntN(2)
			_, err := c.Debug(ctx, "fail-reads", client.FailReadsRequest{GPU: g, On: true})
			time.Sleep(1500 * time.Millisecond)
			start = start.Add(1500 * time.Millisecond) // the calls are timed, not the pause
			if _, err2 := c.Debug(ctx, "fail-reads", client.FailReadsRequest{GPU: g, On: false}); err == nil {
				err = err2
			}
			stats.add("fault", time.Since(start), err)
			fault("failing reads on a GPU (debug fail-reads, read_error)")
		}
	})
	wg.Wait()
	elapsed := time.Since(begin)

	// Every record shipped: the collector up, the spool's backlog empty.
	col.start()
	e.waitFor("the spool's backlog to ship", func() bool { return e.metric("vramseal_audit_spool_pending_records") == 0 })
	verifications := map[string]float64{}
	_, body := e.get("/metrics")
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, "vramseal_verifications_total{"); ok {
			if m := regexp.MustCompile(`result="([a-z_]+)"\} (\S+)`).FindStringSubmatch(rest); m != nil {
				v, _ := strconv.ParseFloat(m[2], 64)
				verifications[m[1]] += v
			}
		}
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(60 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	col.stop()
	args := []string{"audit", "verify", "--spool.dir", filepath.Join(e.dir, "spool"), "--seal.secret-file", filepath.Join(e.dir, "seal.key")}
	for _, f := range col.files {
		args = append(args, "--collector-file", f)
	}
	code, vout, verr := e.cli(args...)
	soakReport(t, soakResult{d: elapsed, warm: warm, rows: rows, stats: stats, faults: faults, verify: vout, verifyCode: code, files: len(col.files), verifications: verifications})
	if code != 0 {
		t.Errorf("audit verify of the spool against the collector's files: exit %d\n%s%s", code, vout, verr)
	}
}
