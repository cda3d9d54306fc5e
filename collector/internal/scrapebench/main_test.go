package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestRunSmall runs the benchmark at a small size: the table is printed and
// the full scrape has the shards' series.
func TestRunSmall(t *testing.T) {
	var out bytes.Buffer
	if _, err := run(context.Background(), config{gpus: 2, shards: 3, scrapes: 5, procs: 10, goalMS: 1e9}, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"empty registry (baseline)", "vramseal /metrics", "vramseal status page /", "status page render alone", "vramseal /metrics, 10 GPU processes, pid labels on", "goal p99 < 1e+09 ms: met"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}
