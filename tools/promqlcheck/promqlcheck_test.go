package promqlcheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/alerts"
	"github.com/vramseal/vramseal/dashboards"
)

// goldenMetrics is the agent's golden /metrics file (cmd/agent's end-to-end
// test writes it).
var goldenMetrics = filepath.Join("..", "..", "cmd", "agent", "testdata", "metrics.golden")

// prometheusMetrics are series Prometheus itself makes for every target.
var prometheusMetrics = []string{"up"}

// nvidiaOnlyMetrics are exported on NVIDIA GPUs only: the golden file is
// the simulated GPU's, which has no row remapper and no XID events. Each
// must be in docs/metrics.md, generated from the collectors' registry.
var nvidiaOnlyMetrics = []string{
	"vramseal_gpu_row_remap_failed", "vramseal_gpu_row_remap_pending", "vramseal_gpu_xid_errors_total",
}

// metricsDoc is the generated metrics reference.
var metricsDoc = filepath.Join("..", "..", "docs", "metrics.md")

// use is one query that names metrics, and where it comes from.
type use struct {
	where string
	expr  string
	isVar bool
}

func shippedQueries(t *testing.T) (uses []use, recorded []string) {
	t.Helper()
	models, err := dashboards.Models()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range models {
		for _, p := range m.Panels {
			for _, tg := range p.Targets {
				uses = append(uses, use{where: m.UID + " / " + p.Title + " / " + tg.RefID, expr: tg.Expr})
			}
		}
		for _, v := range m.Variables {
			if v.Type == "query" {
				uses = append(uses, use{where: m.UID + " / variable " + v.Name, expr: v.Query, isVar: true})
			}
		}
	}
	rf, err := alerts.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			name := r.Alert + r.Record
			uses = append(uses, use{where: "rule " + g.Name + "/" + name, expr: r.Expr})
			if r.Record != "" {
				recorded = append(recorded, r.Record)
			}
		}
	}
	return uses, recorded
}

// TestEveryQueriedMetricIsExported is the check: every metric name in every
// dashboard query, variable query and rule expression is exported by the
// agent (per the golden /metrics file), made by Prometheus, or recorded by
// one of our rules.
func TestEveryQueriedMetricIsExported(t *testing.T) {
	known, err := LoadKnown(goldenMetrics)
	if err != nil {
		t.Fatal(err)
	}
	uses, recorded := shippedQueries(t)
	if len(uses) < 50 {
		t.Fatalf("only %d queries found in the dashboards and rules", len(uses))
	}
	for _, n := range append(prometheusMetrics, recorded...) {
		known[n] = true
	}
	doc, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nvidiaOnlyMetrics {
		if !strings.Contains(string(doc), "| `"+n+"` |") {
			t.Errorf("%s is not in %s: not exported by the agent at all", n, metricsDoc)
		}
		if known[n] {
			t.Errorf("%s is in the golden file: take it out of nvidiaOnlyMetrics", n)
		}
		known[n] = true
	}
	used := map[string]bool{}
	for _, u := range uses {
		var names []string
		var err error
		if u.isVar {
			names, err = VariableMetricNames(u.expr)
		} else {
			names, err = MetricNames(u.expr)
		}
		if err != nil {
			t.Errorf("%s: %v", u.where, err)
			continue
		}
		if len(names) == 0 && !strings.Contains(u.expr, "vector(") {
			t.Errorf("%s: no metric in %q", u.where, u.expr)
		}
		for _, n := range names {
			used[n] = true
			if !known[n] {
				t.Errorf("%s: metric %s is not exported by the agent (query %q)", u.where, n, u.expr)
			}
		}
	}
	t.Logf("%d queries use %d distinct metrics", len(uses), len(used))
}

func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`vramseal_shard_verified{job="vramseal"} == 0`, []string{"vramseal_shard_verified"}},
		{`sum by (gpu) (rate(vramseal_verified_bytes_total{instance=~"$instance"}[$__rate_interval]))`, []string{"vramseal_verified_bytes_total"}},
		{`{__name__="up", job="x"} or vector(0)`, []string{"up"}},
		{`a * on (x) group_left (y) b offset 10m`, []string{"a", "b"}},
		{`histogram_quantile(0.9, sum by (le) (rate(h_bucket[5m])))`, []string{"h_bucket"}},
		{`vector(1)`, []string{}},
	}
	for _, c := range cases {
		got, err := MetricNames(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("MetricNames(%s) = %v, want %v", c.expr, got, c.want)
		}
	}
	for _, bad := range []string{`sum(`, `{job="x"}`, `rate(x[])`, `x{job=~"$job"`} {
		if _, err := MetricNames(bad); err == nil {
			t.Errorf("MetricNames(%q): no error", bad)
		}
	}
}

func TestVariableMetricNames(t *testing.T) {
	got, err := VariableMetricNames(`label_values(vramseal_gpu_info{job=~"$job", instance=~"$instance"}, gpu)`)
	if err != nil || !slices.Equal(got, []string{"vramseal_gpu_info"}) {
		t.Fatalf("got %v, %v", got, err)
	}
	if _, err := VariableMetricNames(`label_values(gpu)`); err == nil {
		t.Fatal("label_values without a selector accepted")
	}
}

// TestCheckCatchesAnUnknownMetric proves the check can fail: a renamed
// metric is not in the known set.
func TestCheckCatchesAnUnknownMetric(t *testing.T) {
	known, err := LoadKnown(goldenMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if !known["vramseal_shard_verified"] {
		t.Fatal("vramseal_shard_verified is not in the golden file")
	}
	names, err := MetricNames(`vramseal_shard_verifed == 0`)
	if err != nil {
		t.Fatal(err)
	}
	if known[names[0]] {
		t.Fatal("a misspelt metric was accepted")
	}
}

func TestLoadKnownFromGolden(t *testing.T) {
	dir := t.TempDir()
	golden := filepath.Join(dir, "metrics.golden")
	const exposition = `# HELP vramseal_verification_duration_seconds Time to verify one shard.
# TYPE vramseal_verification_duration_seconds histogram
vramseal_verification_duration_seconds_bucket{gpu="0",le="+Inf"} 1
vramseal_verification_duration_seconds_sum{gpu="0"} 0.5
vramseal_verification_duration_seconds_count{gpu="0"} 1
# HELP vramseal_sealed_shards Sealed shards.
# TYPE vramseal_sealed_shards gauge
vramseal_sealed_shards{gpu="0"} 2
`
	if err := os.WriteFile(golden, []byte(exposition), 0o600); err != nil {
		t.Fatal(err)
	}
	known, err := LoadKnown(golden)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"vramseal_sealed_shards", "vramseal_verification_duration_seconds_bucket", "vramseal_verification_duration_seconds_count"} {
		if !known[n] {
			t.Errorf("%s missing", n)
		}
	}
	if len(known) != 5 {
		t.Errorf("known = %v, want the 5 series of the file only", known)
	}
	// A broken golden file is an error, not a fallback.
	if err := os.WriteFile(golden, []byte("# TYPE x histogram\nx{ 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKnown(golden); err == nil {
		t.Error("a broken golden file was accepted")
	}
	// So is an empty one.
	if err := os.WriteFile(golden, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKnown(golden); err == nil {
		t.Error("an empty golden file was accepted")
	}
}

// TestLoadKnownWithoutGolden: with no golden file there is nothing to check
// against, and the check fails saying how to write the file, rather than
// falling back to a hand-kept list of names.
func TestLoadKnownWithoutGolden(t *testing.T) {
	known, err := LoadKnown(filepath.Join(t.TempDir(), "metrics.golden"))
	if err == nil {
		t.Fatalf("no error for a missing golden file (known = %d names)", len(known))
	}
	if !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "-update") {
		t.Errorf("error %q does not say the file is missing and how to write it", err)
	}
}

// TestShippedRulesParseWithPrometheus parses alerts/vramseal.rules.yml with
// Prometheus's own rule parser: unknown keys, bad expressions, durations,
// label names and templates are errors.
func TestShippedRulesParseWithPrometheus(t *testing.T) {
	if err := CheckRules(alerts.Rules); err != nil {
		t.Fatalf("alerts/%s: %v", alerts.RulesFile, err)
	}
}

// TestCheckRulesAgreesWithAlertsParse: the agent's strict decoder
// (alerts.Parse) and Prometheus's rule parser accept and refuse the same
// fixtures, so a key Prometheus knows is never refused, nor one it refuses
// kept.
func TestCheckRulesAgreesWithAlertsParse(t *testing.T) {
	for file, valid := range map[string]bool{
		"keep_firing_for.rules.yml":   true,
		"unknown_rule_key.rules.yml":  false,
		"unknown_group_key.rules.yml": false,
	} {
		data, err := os.ReadFile(filepath.Join("..", "..", "alerts", "testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		_, strictErr := alerts.Parse(data)
		promErr := CheckRules(data)
		if (strictErr == nil) != valid || (promErr == nil) != valid {
			t.Errorf("%s: want valid=%v; alerts.Parse: %v; Prometheus: %v", file, valid, strictErr, promErr)
		}
	}
}

// TestCheckRulesCatchesBrokenRules proves the check can fail on what only
// Prometheus's parser sees.
func TestCheckRulesCatchesBrokenRules(t *testing.T) {
	for name, rule := range map[string]string{
		"expression":      "- alert: A\n        expr: up ==\n",
		"duration":        "- alert: A\n        expr: up == 0\n        for: 5 minutes\n",
		"template":        "- alert: A\n        expr: up == 0\n        annotations:\n          summary: \"{{ $labels.x \"\n",
		"alert or record": "- expr: up == 0\n",
	} {
		data := "groups:\n  - name: g\n    rules:\n      " + rule
		if _, err := alerts.Parse([]byte(data)); err != nil {
			t.Fatalf("%s: fixture does not even decode: %v", name, err)
		}
		if err := CheckRules([]byte(data)); err == nil {
			t.Errorf("broken %s accepted:\n%s", name, data)
		}
	}
	if err := CheckRules([]byte("groups: []\n---\ngroups: []\n")); err == nil {
		t.Error("a second YAML document accepted")
	}
}

func FuzzMetricNames(f *testing.F) {
	for _, s := range []string{`up == 0`, `sum(rate(x{a="b"}[5m]))`, `{__name__="x"}`, `label_values(x, y)`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, expr string) {
		names, err := MetricNames(expr)
		if err == nil {
			for _, n := range names {
				if n == "" {
					t.Fatalf("empty metric name from %q", expr)
				}
			}
		}
	})
}
