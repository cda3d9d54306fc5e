// Command scrapebench measures the cost of a full /metrics scrape with many
// simulated GPUs and sealed shards, beside an empty registry's scrape in
// the same run, and the cost of the status page at / over the same node
// (scripts/bench.d/30-metrics.sh runs it).
//
// Each scrape is a real HTTP GET on loopback, with gzip as Prometheus asks
// for it, reading the whole body: the baseline through promhttp.HandlerFor
// over an empty registry, the full scrape through collector.Handler over
// the collectors and the Go and process collectors, the status page
// through statuspage.Handler (summary, as the agent serves it by default)
// reading the same sealer, GPU telemetry cache and audit events. The three
// alternate so that all see the same machine load. The page's render alone
// (Snapshot and Render, no HTTP) is measured too.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/collector/internal/simnode"
	"github.com/vramseal/vramseal/collector/metricstest"
	"github.com/vramseal/vramseal/collector/simsource"
	"github.com/vramseal/vramseal/internal/statuspage"
)

type config struct {
	gpus, shards, scrapes int
	procs                 int
	goalMS                float64
}

func main() {
	var c config
	flag.IntVar(&c.gpus, "gpus", 8, "simulated GPUs")
	flag.IntVar(&c.shards, "shards", 64, "shards sealed per GPU")
	flag.IntVar(&c.scrapes, "n", 1000, "scrapes measured per case")
	flag.IntVar(&c.procs, "procs", 100, "GPU processes in the process-attribution case (per-process series on)")
	flag.Float64Var(&c.goalMS, "goal-ms", 10, "p99 goal of a full scrape, in milliseconds")
	flag.Parse()
	// The verdict is printed; the exit status reports only failures to
	// measure, so that bench.sh runs the other benchmarks.
	if _, err := run(context.Background(), c, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "scrapebench:", err)
		os.Exit(1)
	}
}

// result is one case's measurements.
type result struct {
	name     string
	cpu      time.Duration // process CPU (server and client) per scrape
	page     bool          // the status page (HTML, no series)
	series   int
	bytes    int
	p50, p99 time.Duration
	samples  []time.Duration
}

// run measures and prints the table; it reports whether the goal was met.
func run(ctx context.Context, c config, w io.Writer) (bool, error) {
	a, err := newAgent(ctx, c.gpus, c.shards)
	if err != nil {
		return false, err
	}
	defer a.node.Close()
	procReg, err := a.withProcesses(ctx, c.procs)
	if err != nil {
		return false, err
	}
	cases := []*result{{name: "empty registry (baseline)"}, {name: "vramseal /metrics"}, {name: "vramseal status page /", page: true},
		{name: fmt.Sprintf("vramseal /metrics, %d GPU processes, pid labels on", c.procs)}}
	servers := []*httptest.Server{
		httptest.NewServer(promhttp.HandlerFor(prometheus.NewRegistry(), promhttp.HandlerOpts{})),
		httptest.NewServer(collector.Handler(a.reg, nil)),                                      // what the agent serves on /metrics
		httptest.NewServer(statuspage.Handler(a.statusSource(), statuspage.Summary, nil, nil)), // and on /
		httptest.NewServer(collector.Handler(procReg, nil)),                                    // /metrics with process attribution
	}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	client := &http.Client{Transport: &http.Transport{}} // asks for gzip, as Prometheus does
	scrape := func(url string) (time.Duration, string, error) {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			return 0, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		d := time.Since(start)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("scrape: %s", resp.Status)
		}
		return d, string(b), err
	}
	const warmup = 20
	for i := 0; i < warmup+c.scrapes; i++ {
		for j, s := range servers {
			d, body, err := scrape(s.URL)
			if err != nil {
				return false, err
			}
			if i < warmup {
				continue
			}
			r := cases[j]
			r.samples = append(r.samples, d)
			if r.bytes == 0 {
				r.bytes = len(body)
				if !r.page {
					r.series = metricstest.Samples(body)
				}
			}
		}
	}
	// CPU per scrape, measured on its own (less sensitive to a busy
	// machine than the latencies): each case alone, back to back.
	for j, s := range servers {
		n := max(c.scrapes/4, 10)
		before := cpuTime()
		for i := 0; i < n; i++ {
			if _, _, err := scrape(s.URL); err != nil {
				return false, err
			}
		}
		cases[j].cpu = (cpuTime() - before) / time.Duration(n)
	}
	// The page's render alone: Snapshot and Render into memory.
	render := &result{name: "status page render alone (no HTTP)", page: true}
	src := a.statusSource()
	var buf bytes.Buffer
	for i := 0; i < warmup+c.scrapes; i++ {
		buf.Reset()
		start := time.Now()
		if err := statuspage.Render(&buf, statuspage.Snapshot(src, statuspage.Summary, time.Now())); err != nil {
			return false, err
		}
		if i >= warmup {
			render.samples = append(render.samples, time.Since(start))
		}
	}
	render.bytes = buf.Len()
	before := cpuTime()
	n := max(c.scrapes/4, 10)
	for i := 0; i < n; i++ {
		buf.Reset()
		_ = statuspage.Render(&buf, statuspage.Snapshot(src, statuspage.Summary, time.Now()))
	}
	render.cpu = (cpuTime() - before) / time.Duration(n)
	cases = append(cases, render)
	for _, r := range cases {
		slices.Sort(r.samples)
		r.p50 = r.samples[len(r.samples)/2]
		r.p99 = r.samples[(len(r.samples)*99)/100]
	}
	fmt.Fprintf(w, "metrics scrape and status page: %d simulated GPUs x %d shards, %d requests per case (HTTP on loopback, gzip); the last /metrics case adds %d GPU processes\n",
		c.gpus, c.shards, c.scrapes, c.procs)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "case\tseries\tbytes (uncompressed)\tp50 ms\tp99 ms\tCPU ms/request\t")
	for _, r := range cases {
		series := strconv.Itoa(r.series)
		if r.page {
			series = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f\t%.3f\t%.3f\t\n", r.name, series, r.bytes, ms(r.p50), ms(r.p99), ms(r.cpu))
	}
	tw.Flush()
	ok := ms(cases[1].p99) < c.goalMS
	verdict := "met"
	if !ok {
		verdict = "NOT met"
	}
	fmt.Fprintf(w, "goal p99 < %g ms: %s (p99 %.3f ms, baseline p99 %.3f ms)%s\n", c.goalMS, verdict, ms(cases[1].p99), ms(cases[0].p99), loadAverage())
	return ok, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// agent is what the agent serves from: a sealed simulated node, its
// registry and the collectors (whose GPU telemetry cache the page reads).
type agent struct {
	node *simnode.Node
	reg  *prometheus.Registry
	set  *collector.Set
}

// statusSource is the status page's view of the node, as the agent wires
// it (no schedule or policy: their rows show "—" and "unknown").
func (a *agent) statusSource() statuspage.Source {
	return statuspage.Source{
		WorkerID: "bench", Device: "sim", Simulated: true, VerifyInterval: 5 * time.Minute,
		Links:  []statuspage.Link{{Href: "/metrics", Text: "Metrics"}, {Href: "/healthz", Text: "Health"}, {Href: "/readyz", Text: "Readiness"}},
		Shards: a.node.Sealer, Telemetry: a.set, Events: a.node.Recent, Audit: noSpool,
	}
}

var noSpool = collector.AuditStatsFunc(func() audit.SpoolStats { return audit.SpoolStats{} })

// agentRegistry is the registry the agent serves, on simulated GPUs with
// shards sealed and verified.
func agentRegistry(ctx context.Context, gpus, shards int) (*prometheus.Registry, func(), error) {
	a, err := newAgent(ctx, gpus, shards)
	if err != nil {
		return nil, nil, err
	}
	return a.reg, a.node.Close, nil
}

// newAgent seals gpus x shards shards on simulated GPUs, verifies them and
// registers the collectors, with the GPU telemetry read once.
func newAgent(ctx context.Context, gpus, shards int) (*agent, error) {
	var sealed []simnode.Shard
	for g := 0; g < gpus; g++ {
		for i := 0; i < shards; i++ {
			id := fmt.Sprintf("model-%02d-shard-%05d-of-%05d.safetensors", g, i, shards)
			sealed = append(sealed, simnode.Shard{ID: id, GPU: g, Data: []byte(id), ModelRef: "org/model@rev"})
		}
	}
	node, err := simnode.New(ctx, simnode.Config{Name: "scrapebench", WorkerID: "bench", GPUs: gpus, LeafSize: 4096, Shards: sealed})
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*agent, error) { node.Close(); return nil, err }
	if _, err := node.Sealer.VerifyAll(ctx); err != nil {
		return fail(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	set, err := collector.Register(reg, collector.Options{
		WorkerID: "bench", Device: "sim", GPU: simsource.New(node.Devices), Sealer: node.Sealer, Observer: node.Observer,
		VerifyInterval: 5 * time.Minute, AuditCounters: node.Counters, Logger: node.Logger, AuditStats: noSpool,
	})
	if err != nil {
		return fail(err)
	}
	if err := set.Refresh(ctx); err != nil {
		return fail(err)
	}
	return &agent{node: node, reg: reg, set: set}, nil
}

// withProcesses returns a second registry over the same node whose GPU
// telemetry also reports n processes spread over the GPUs (256 MiB each,
// none of them the agent's consumers: every one is attributed), with the
// per-process series on (metrics.process_labels) and a cap above n.
func (a *agent) withProcesses(ctx context.Context, n int) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	set, err := collector.Register(reg, collector.Options{
		WorkerID: "bench", Device: "sim", GPU: processes{src: simsource.New(a.node.Devices), n: n}, Sealer: a.node.Sealer,
		Observer: a.node.Observer, VerifyInterval: 5 * time.Minute, AuditCounters: a.node.Counters, Logger: a.node.Logger,
		AuditStats: noSpool,
		Processes: collector.Processes{AgentPID: 1, HostPIDNamespace: true, Labels: true, LabelLimit: n + 1,
			Name: func(pid int64) (string, bool) { return "python3", true }},
	})
	if err != nil {
		return nil, err
	}
	if err := set.Refresh(ctx); err != nil {
		return nil, err
	}
	return reg, nil
}

// processes adds n processes to a GPU source's telemetry.
type processes struct {
	src collector.GPUSource
	n   int
}

func (p processes) Telemetry(ctx context.Context) ([]collector.GPUTelemetry, error) {
	ts, err := p.src.Telemetry(ctx)
	if err != nil || len(ts) == 0 {
		return ts, err
	}
	for i := 0; i < p.n; i++ {
		t := &ts[i%len(ts)]
		t.HasProcesses = true
		t.Processes = append(t.Processes, collector.GPUProcess{PID: uint32(10000 + i), UsedBytes: 256 << 20, HasUsed: true, GPUInstanceID: -1})
	}
	return ts, nil
}

// loadAverage describes the machine's load, for reading the numbers.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return fmt.Sprintf("; load average %s %s %s on %d CPUs", f[0], f[1], f[2], runtime.NumCPU())
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
