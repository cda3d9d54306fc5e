package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSubstitute(t *testing.T) {
	got := substitute(`rate(x{instance=~"$instance", gpu=~"${gpu}", s=~"[[shard_id]]"}[$__rate_interval])`,
		map[string]string{"instance": "n:1", "gpu": "0", "shard_id": "a"}, time.Second)
	want := `rate(x{instance=~"n:1", gpu=~"0", s=~"a"}[10s])`
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	// $job must not eat the start of a longer variable name.
	if got := substitute(`$jobs $job`, map[string]string{"job": "j", "jobs": "J"}, time.Second); got != "J j" {
		t.Fatalf("got %q", got)
	}
}

func TestCheckPanels(t *testing.T) {
	results := []PanelResult{
		{Dashboard: "d", Panel: "ok", Series: 2},
		{Dashboard: "d", Panel: "empty", Series: 0},
		{Dashboard: "d", Panel: "allowed", Series: 0},
		{Dashboard: "d", Panel: "broken", Err: errors.New("parse error")},
	}
	problems := CheckPanels(results, map[string]string{"d/allowed": "legitimately empty"})
	if len(problems) != 2 || !strings.Contains(problems[0], "d/empty") || !strings.Contains(problems[1], "d/broken") {
		t.Fatalf("problems: %v", problems)
	}
}

func TestMissingFamilies(t *testing.T) {
	missing, err := missingFamilies(strings.NewReader("# TYPE a gauge\na 1\n# HELP b x\nb 2\n"), []string{"a", "b"})
	if err != nil || len(missing) != 1 || missing[0] != "b" {
		t.Fatalf("missing %v, %v", missing, err)
	}
}
