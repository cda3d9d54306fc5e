package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/vramseal/vramseal/collector/metricstest"
	"github.com/vramseal/vramseal/internal/testenv"
)

var update = flag.Bool("update", false, "rewrite "+goldenMetrics+" from the agent's /metrics (TestMetricsGolden)")

// goldenMetrics lists every series the agent serves, values that change
// from run to run masked. The dashboards' and alerts' tests read it too.
const goldenMetrics = "testdata/metrics.golden"

// TestMetricsGolden starts the agent on two simulated GPUs with fixed
// declared shards, verifies them once, and compares its masked /metrics
// with testdata/metrics.golden (node_exporter's end-to-end test). After a
// deliberate change run
//
//	go test ./cmd/agent -run TestMetricsGolden -update
//
// and review the diff. The verify interval is an hour, so no scheduled
// verification adds to the counters: every value kept is fixed by the
// configuration and the shards' contents.
func TestMetricsGolden(t *testing.T) {
	// No OTLP export: whether a first export attempt has failed yet is a
	// matter of timing (the spool keeps every record either way).
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	e := newEnv(t)
	e.verify = "{interval: 1h, jitter: 0}"
	e.shardFile("llama-00001.safetensors", 300000, 1)
	e.shardFile("llama-00002.safetensors", 70000, 2)
	e.shardFile("tokenizer.json", 4096, 3)
	e.writeConfig("sim",
		"llama-00001:llama-00001.safetensors:0:golden/llama@1",
		"llama-00002:llama-00002.safetensors:1:golden/llama@1",
		"tokenizer:tokenizer.json:0")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	out := e.mustCLI(0, "verify", "--all")
	for _, want := range []string{"llama-00001: ok", "llama-00002: ok", "tokenizer: ok"} {
		if !strings.Contains(out, want) {
			t.Fatalf("verify --all lacks %q:\n%s", want, out)
		}
	}
	// GPU telemetry is read in the background: wait for a read that saw
	// every shard sealed (the simulated GPUs' used memory is what they hold).
	s := e.waitScrape("GPU telemetry read after the shards were sealed", func(s scrape) bool {
		for _, gpu := range []string{"0", "1"} {
			used, ok1 := s.value("vramseal_gpu_memory_used_bytes", "gpu", gpu)
			sealed, ok2 := s.value("vramseal_sealed_bytes", "gpu", gpu)
			if !ok1 || !ok2 || used != sealed || sealed == 0 {
				return false
			}
		}
		ok, _ := s.value("vramseal_collector_success", "collector", "gpu")
		return ok == 1
	})
	for gpu, want := range map[string]float64{"0": 2, "1": 1} {
		if got, _ := s.value("vramseal_verifications_total", "gpu", gpu, "result", "ok"); got != want {
			t.Errorf("vramseal_verifications_total{gpu=%q,result=\"ok\"} = %g, want %g (did a scheduled verification run?)", gpu, got, want)
		}
	}

	got, err := metricstest.Mask(strings.NewReader(s.text), goldenRules)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.MkdirAll(filepath.Dir(goldenMetrics), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenMetrics, got, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d bytes)", goldenMetrics, len(got))
	}
	want, err := os.ReadFile(goldenMetrics)
	if err != nil {
		t.Fatalf("%v (create it with -update)", err)
	}
	if d := lineDiff(string(want), string(got)); d != "" {
		t.Errorf("/metrics differs from %s (after a deliberate change: go test ./cmd/agent -run TestMetricsGolden -update):\n%s", goldenMetrics, d)
	}
	checkMetricsWithPromtool(t, goldenMetrics)
}

// goldenRules are metricstest.DefaultRules, and the spool's size masked:
// its records hold timestamps whose text length varies by a byte or so.
var goldenRules = func() metricstest.Rules {
	r := metricstest.DefaultRules
	r.MaskValues = func(f string) bool {
		return f == "vramseal_audit_spool_bytes" || metricstest.DefaultRules.MaskValues(f)
	}
	return r
}()

// checkMetricsWithPromtool runs `promtool check metrics` on a file.
func checkMetricsWithPromtool(t *testing.T, path string) {
	t.Helper()
	promtool := testenv.Tool(t, "VRAMSEAL_PROMTOOL")
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics < %s: %v\n%s", path, err, out)
	}
}

// lineDiff lists the lines only in want (-) and only in got (+), in order;
// "" when the texts are equal.
func lineDiff(want, got string) string {
	if want == got {
		return ""
	}
	count := func(s string) map[string]int {
		m := map[string]int{}
		for _, l := range strings.Split(s, "\n") {
			m[l]++
		}
		return m
	}
	inWant, inGot := count(want), count(got)
	var b strings.Builder
	for _, l := range strings.Split(want, "\n") {
		if inGot[l] > 0 {
			inGot[l]--
		} else {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	for _, l := range strings.Split(got, "\n") {
		if inWant[l] > 0 {
			inWant[l]--
		} else {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	if b.Len() == 0 {
		return "(same lines in another order)\n"
	}
	return b.String()
}

// scrape is one /metrics response, parsed.
type scrape struct {
	text string
	fams map[string]*dto.MetricFamily
}

// scrape gets and parses /metrics.
func (e *env) scrape() scrape {
	e.t.Helper()
	code, body := e.get("/metrics")
	if code != 200 {
		e.t.Fatalf("/metrics: %d %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		e.t.Fatalf("/metrics does not parse: %v", err)
	}
	return scrape{text: body, fams: fams}
}

// waitScrape scrapes until cond holds and returns that scrape.
func (e *env) waitScrape(what string, cond func(scrape) bool) scrape {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		s := e.scrape()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s; last scrape's vramseal series:\n%s", what, s.vramseal())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// value returns the value of the first series of the family that has the
// labels given as name, value pairs (it may have more). A histogram's or
// summary's value is its sample count.
func (s scrape) value(name string, labels ...string) (float64, bool) {
	mf := s.fams[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if hasLabels(m, labels...) {
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Untyped != nil:
				return m.GetUntyped().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			case m.Summary != nil:
				return float64(m.GetSummary().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

// with lists the families that have a series with the labels.
func (s scrape) with(labels ...string) []string {
	var out []string
	for name, mf := range s.fams {
		for _, m := range mf.GetMetric() {
			if hasLabels(m, labels...) {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// vramseal is the scrape's vramseal_ lines, for failure messages.
func (s scrape) vramseal() string {
	var b bytes.Buffer
	for _, l := range strings.Split(s.text, "\n") {
		if strings.HasPrefix(l, "vramseal_") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

func hasLabels(m *dto.Metric, labels ...string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
