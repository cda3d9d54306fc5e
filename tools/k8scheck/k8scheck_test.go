package k8scheck

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"

	"github.com/vramseal/vramseal/deploy"
)

// manifests is deploy/kubernetes, the kustomization users apply.
var manifests = filepath.Join("..", "..", "deploy", "kubernetes")

// TestKustomizeBuild renders the kustomization as `kubectl apply -k` does,
// checks that every object comes out, in the vramseal namespace, and that
// each decodes strictly into its API type.
func TestKustomizeBuild(t *testing.T) {
	docs, err := Render(manifests)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range docs {
		obj, err := Decode(d)
		if err != nil {
			t.Errorf("%v\n%s", err, d)
			continue
		}
		kind := obj.GetObjectKind().GroupVersionKind().Kind
		got = append(got, kind+"/"+obj.GetName())
		if kind != "Namespace" && obj.GetNamespace() != deploy.Namespace {
			t.Errorf("%s/%s is in namespace %q, want %q", kind, obj.GetName(), obj.GetNamespace(), deploy.Namespace)
		}
	}
	slices.Sort(got)
	want := []string{"ConfigMap/vramseal-agent-config", "ConfigMap/vramseal-dashboards", "DaemonSet/vramseal-agent",
		"Namespace/vramseal", "PrometheusRule/vramseal", "Service/vramseal", "ServiceAccount/vramseal-agent", "ServiceMonitor/vramseal"}
	if !slices.Equal(got, want) {
		t.Fatalf("kustomize produced %v, want %v", got, want)
	}
}

// TestEveryManifestDecodesStrictly decodes each file on its own, including
// the ones the kustomization leaves out (the secret template).
func TestEveryManifestDecodesStrictly(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(manifests, "*.yaml"))
	if err != nil || len(files) < 8 {
		t.Fatalf("manifests %v: %v", files, err)
	}
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		docs := Split(data)
		if len(docs) == 0 {
			t.Errorf("%s: no object", f)
		}
		for _, d := range docs {
			if _, err := Decode(d); err != nil {
				t.Errorf("%s: %v", f, err)
			}
		}
	}
}

// TestPrometheusRuleKeepsEveryRuleKey: what deploy.PrometheusRule makes of
// a rule file using every key of Prometheus's format is a PrometheusRule
// the prometheus-operator accepts, with each key in place.
func TestPrometheusRuleKeepsEveryRuleKey(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("..", "..", "alerts", "testdata", "keep_firing_for.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := deploy.PrometheusRule(src)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := Decode(out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	pr := obj.(*monitoringv1.PrometheusRule)
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
kind: Namespace
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
