package collector_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/collector/simsource"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// t0 is the fixed clock of the tests.
var t0 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

// env is an agent's metric side on simulated GPUs: a real Sealer, a real
// audit emitter counting into Counters, the collectors on a registry.
type env struct {
	devs     []*simgpu.Device
	sealer   *sealer.Sealer
	recorder *audit.Recorder
	counters *audit.Counters
	obs      *collector.Observer
	set      *collector.Set
	reg      *prometheus.Registry
	dir      string
}

// countingEmitter records events and counts them like the real emitters do.
type countingEmitter struct {
	rec      *audit.Recorder
	counters *audit.Counters
}

func (e countingEmitter) Emit(ctx context.Context, ev audit.Event) audit.Receipt {
	e.counters.Emitted(ev.Name())
	return e.rec.Emit(ctx, ev)
}

type envOpts struct {
	gpus   int
	mutate func(*collector.Options)
}

func quietLogger() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

func newEnv(t testing.TB, o envOpts) *env {
	t.Helper()
	if o.gpus == 0 {
		o.gpus = 2
	}
	devs, err := simgpu.New(simgpu.Config{GPUs: o.gpus, MemoryBytes: 1 << 30, Properties: simgpu.DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	e := &env{devs: devs, recorder: &audit.Recorder{}, counters: audit.NewCounters(), dir: t.TempDir()}
	gpus := make([]int, len(devs))
	for i, d := range devs {
		gpus[i] = d.Index()
	}
	e.obs = collector.NewObserver(gpus)
	e.sealer, err = sealer.New(sealer.Config{
		WorkerID: "node-a", Devices: simgpu.Devices(devs), Signer: signer,
		Emitter:  countingEmitter{rec: e.recorder, counters: e.counters},
		LeafSize: 4096, Observer: e.obs, Logger: quietLogger(),
		Now: func() time.Time { return t0 },
	})
	if err != nil {
		t.Fatal(err)
	}
	opts := collector.Options{
		WorkerID: "node-a", Device: "sim",
		GPU: simsource.New(devs), GPUInterval: time.Hour, GPUTimeout: 2 * time.Second,
		Sealer: e.sealer, Observer: e.obs, VerifyInterval: 5 * time.Minute,
		AuditCounters: e.counters, Logger: quietLogger(), Now: func() time.Time { return t0 },
	}
	if o.mutate != nil {
		o.mutate(&opts)
	}
	e.reg = prometheus.NewRegistry()
	e.set, err = collector.Register(e.reg, opts)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// seal writes a file of size bytes (a pattern from id) and seals it.
func (e *env) seal(t testing.TB, id string, gpu, size int) sealer.Seal {
	t.Helper()
	p := filepath.Join(e.dir, id)
	b := bytes.Repeat([]byte(id), size/len(id)+1)[:size]
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := e.sealer.Seal(context.Background(), sealer.SealRequest{ID: id, Path: p, GPU: gpu, ModelRef: "demo/" + id})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (e *env) refresh(t testing.TB) {
	t.Helper()
	if err := e.set.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// scrape serves the registry through promhttp and returns the body.
func scrape(t testing.TB, reg prometheus.Gatherer) string {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s: %s", resp.Status, b)
	}
	return string(b)
}

// sample returns the lines of a scrape whose series starts with prefix.
func lines(body, prefix string) []string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}
