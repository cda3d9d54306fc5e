package k8scheck

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/testenv"
)

// chart is the Helm chart users install.
var chart = filepath.Join("..", "..", "deploy", "helm", "vramseal")

const (
	release   = "vs"
	namespace = "gpu-integrity"
)

func helm(t *testing.T) Helm {
	t.Helper()
	return Helm{Bin: testenv.Tool(t, "VRAMSEAL_HELM"), Home: t.TempDir()}
}

// valueSets are the defaults ("") and every ci/*.yaml.
func valueSets(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(chart, "ci", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("ci value sets %v: %v", files, err)
	}
	return append([]string{""}, files...)
}

func valuesArgs(set string) []string {
	if set == "" {
		return nil
	}
	return []string{"-f", set}
}

func setName(set string) string {
	if set == "" {
		return "defaults"
	}
	return strings.TrimSuffix(filepath.Base(set), ".yaml")
}

// rendered is a value set's objects, by kind and name.
type rendered map[string]Object

func (r rendered) get(t *testing.T, kind, name string) Object {
	t.Helper()
	o, ok := r[kind+"/"+name]
	if !ok {
		t.Fatalf("no %s/%s rendered; have %v", kind, name, r.names())
	}
	return o
}

func (r rendered) names() []string {
	var out []string
	for k := range r {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// render templates the chart with a value set (and more args), decodes
// every object strictly and checks its namespace.
func render(t *testing.T, h Helm, set string, args ...string) rendered {
	t.Helper()
	docs, err := h.Template(context.Background(), chart, release, namespace, append(valuesArgs(set), args...)...)
	if err != nil {
		t.Fatal(err)
	}
	out := rendered{}
	for _, d := range docs {
		obj, err := Decode(d)
		if err != nil {
			t.Errorf("%s: %v\n%s", setName(set), err, d)
			continue
		}
		key := obj.GetObjectKind().GroupVersionKind().Kind + "/" + obj.GetName()
		if _, dup := out[key]; dup {
			t.Errorf("%s: %s rendered twice", setName(set), key)
		}
		out[key] = obj
		// Dashboards go where the Grafana sidecar looks (dashboards.namespace).
		if ns := obj.GetNamespace(); ns != namespace && !(obj.GetLabels()["grafana_dashboard"] != "" && ns != "") {
			t.Errorf("%s: %s in namespace %q, want %q", setName(set), key, ns, namespace)
		}
		if obj.GetLabels()["app.kubernetes.io/part-of"] != "vramseal" || obj.GetLabels()["app.kubernetes.io/instance"] != release {
			t.Errorf("%s: %s lacks the chart's labels: %v", setName(set), key, obj.GetLabels())
		}
	}
	return out
}

// TestChartLint: helm lint --strict is clean for every value set.
func TestChartLint(t *testing.T) {
	h := helm(t)
	for _, set := range valueSets(t) {
		out, err := h.Run(context.Background(), append([]string{"lint", "--strict", chart}, valuesArgs(set)...)...)
		if err != nil {
			t.Errorf("%s: %v", setName(set), err)
			continue
		}
		if s := string(out); strings.Contains(s, "[WARNING]") || strings.Contains(s, "[ERROR]") {
			t.Errorf("%s: helm lint:\n%s", setName(set), s)
		}
	}
}

// TestChartRendersStrictly renders every value set: each object decodes
// strictly into its API type, and the configuration the chart writes is
// one the agent's own loader accepts.
func TestChartRendersStrictly(t *testing.T) {
	h := helm(t)
	for _, set := range valueSets(t) {
		t.Run(setName(set), func(t *testing.T) {
			r := render(t, h, set)
			cm := r.get(t, "ConfigMap", release+"-vramseal-config").(*corev1.ConfigMap)
			cfg, err := config.Parse("config.yml", []byte(cm.Data["config.yml"]), config.Env{Getenv: func(string) string { return "gpu-node-1" }})
			if err != nil {
				t.Fatalf("the rendered configuration does not load: %v\n%s", err, cm.Data["config.yml"])
			}
			checkDaemonSet(t, r, cfg)
			t.Logf("%d objects: %v", len(r), r.names())
		})
	}
}

// TestValuesTyposRefused: the schema refuses an unknown key anywhere (the
// agent's configuration included), a duration that is not a string, a
// duration the agent would not parse and an override of an alert that does
// not exist, at `helm template` (and so at `helm install`).
func TestValuesTyposRefused(t *testing.T) {
	h := helm(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "config.verify.intervall=5m"}, "additional properties 'intervall' not allowed"},
		{[]string{"--set", "config.shards[0].id=a", "--set", "config.shards[0].path=/models/a", "--set", "config.shards[0].gpu=0", "--set", "config.shards[0].sha=x"}, "additional properties 'sha' not allowed"},
		{[]string{"--set", "serviceMonitor.enabeld=true"}, "additional properties 'enabeld' not allowed"},
		{[]string{"--set", "config.verify.interval=300"}, "want string"},
		{[]string{"--set-string", "config.verify.interval=5min"}, "/config/verify/interval"},
		{[]string{"--set", "config.device=gpu"}, "/config/device"},
		{[]string{"--set", "prometheusRule.rules.VramsealSealVerifcationFailed.enabled=false"}, "VramsealSealVerifcationFailed"},
		{[]string{"--set", "serviceMonitor.enabled=true", "--set", "podMonitor.enabled=true"}, "enable one of serviceMonitor and podMonitor"},
	} {
		_, err := h.Template(context.Background(), chart, release, namespace, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one saying %q", tc.args, err, tc.want)
			continue
		}
		t.Logf("%v: refused: %s", tc.args, firstLines(err.Error(), 3))
	}
}

func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, " | ")
}

// TestPrometheusRuleKeepsEveryRuleKey: the chart's PrometheusRule, made
// from a rule file using every key of Prometheus's format, keeps each key
// where the prometheus-operator reads it.
func TestPrometheusRuleKeepsEveryRuleKey(t *testing.T) {
	h := helm(t)
	dir := filepath.Join(t.TempDir(), "vramseal")
	if err := os.CopyFS(dir, os.DirFS(chart)); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("..", "..", "alerts", "testdata", "keep_firing_for.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "files", "vramseal.rules.yml"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	docs, err := h.Template(context.Background(), dir, release, namespace, "--set", "prometheusRule.enabled=true", "--skip-schema-validation")
	if err != nil {
		t.Fatal(err)
	}
	var pr *monitoringv1.PrometheusRule
	for _, d := range docs {
		obj, err := Decode(d)
		if err != nil {
			t.Fatalf("%v\n%s", err, d)
		}
		if p, ok := obj.(*monitoringv1.PrometheusRule); ok {
			pr = p
		}
	}
	if pr == nil || len(pr.Spec.Groups) == 0 {
		t.Fatal("no PrometheusRule rendered")
	}
	g := pr.Spec.Groups[0]
	if g.Interval == nil || *g.Interval != "30s" || g.QueryOffset == nil || *g.QueryOffset != "1m" ||
		g.Limit == nil || *g.Limit != 10 || g.Labels["team"] != "gpu" {
		t.Errorf("group keys lost: %+v", g)
	}
	r := g.Rules[0]
	if r.KeepFiringFor == nil || *r.KeepFiringFor != "10m" || r.For == nil || *r.For != "2m" {
		t.Errorf("rule keys lost: %+v", r)
	}
}

// TestDecodeRefusesWhatAClusterWouldNotKeep proves the check can fail.
func TestDecodeRefusesWhatAClusterWouldNotKeep(t *testing.T) {
	for name, doc := range map[string]string{
		"misspelt field": `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: x}
spec:
  template:
    spec:
      containers:
        - name: agent
          image: x
          imagePullPolcy: Always
`,
		"misplaced field": `apiVersion: v1
kind: Service
metadata: {name: x, port: 9477}
`,
		"wrong type": `apiVersion: v1
kind: Service
metadata: {name: x}
spec: {ports: [{port: "many"}]}
`,
		"duplicate field": `apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {a: "1"}
data: {b: "2"}
`,
		"unknown kind": `apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
`,
		"no name": `apiVersion: v1
kind: ConfigMap
metadata: {}
`,
		"unknown rule key": `apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: x}
spec:
  groups:
    - name: g
      rules:
        - alert: A
          expr: up == 0
          keep_firing: 5m
`,
		"unknown pod monitor key": `apiVersion: monitoring.coreos.com/v1
kind: PodMonitor
metadata: {name: x}
spec:
  podMetricsEndpoints:
    - port: metrics
      intervall: 30s
`,
	} {
		_, err := Decode([]byte(doc))
		if err == nil {
			t.Errorf("%s: accepted:\n%s", name, doc)
			continue
		}
		t.Logf("%s: %v", name, err)
	}
}

func TestSplit(t *testing.T) {
	docs := Split([]byte("# head\n---\na: 1\n---\n# only a comment\n---\nb: 2\n"))
	if len(docs) != 2 || !strings.Contains(string(docs[0]), "a: 1") || !strings.Contains(string(docs[1]), "b: 2") {
		t.Fatalf("Split = %q", docs)
	}
}
