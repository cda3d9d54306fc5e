package main

import (
	"flag"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

var update = flag.Bool("update", false, "rewrite docs/metrics.md")

const docPath = "../../../docs/metrics.md"

// TestDocsUpToDate fails when docs/metrics.md is not what `make generate`
// writes.
func TestDocsUpToDate(t *testing.T) {
	got, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(docPath, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatalf("%v (run `make generate`)", err)
	}
	if string(got) != string(want) {
		t.Fatalf("docs/metrics.md is stale: run `make generate` (or go test ./collector/internal/metricsdoc -update)")
	}
}

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestEveryDescribedMetricIsDocumented checks that the showcase registry
// gives every metric the collectors describe a series, so none is missing
// from the page.
func TestEveryDescribedMetricIsDocumented(t *testing.T) {
	set, reg, cleanup, err := showcase()
	if err != nil {
		t.Fatal(err)
	}
	defer cleanup()
	doc := string(render(must(reg.Gather())))
	ch := make(chan *prometheus.Desc, 256)
	go func() { set.Describe(ch); close(ch) }()
	n := 0
	for d := range ch {
		m := fqName.FindStringSubmatch(d.String())
		if m == nil {
			t.Fatalf("cannot read the name of %s", d)
		}
		n++
		if !strings.Contains(doc, "| `"+m[1]+"` |") {
			t.Errorf("%s is described but not documented (give it a series in showcase)", m[1])
		}
	}
	if n < 30 {
		t.Errorf("only %d metrics described", n)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
