package alerts

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vramseal/vramseal/internal/testenv"
)

// promtool returns the pinned promtool that `make test` builds and exports.
func promtool(t *testing.T) string {
	t.Helper()
	p := testenv.Tool(t, "VRAMSEAL_PROMTOOL")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("VRAMSEAL_PROMTOOL=%s: %v", p, err)
	}
	return p
}

func runPromtool(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

func testFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("tests", "*.yml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no promtool tests in tests/: %v", err)
	}
	return files
}

func TestPromtoolCheckRules(t *testing.T) {
	out := runPromtool(t, "check", "rules", RulesFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules did not report SUCCESS:\n%s", out)
	}
}

func TestPromtoolTestRules(t *testing.T) {
	out := runPromtool(t, append([]string{"test", "rules"}, testFiles(t)...)...)
	if strings.Contains(out, "FAILED") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
}

// TestPromtoolCatchesABrokenRule proves the promtool test above can fail: the
// unit tests run against a copy of the rules whose seal-failure alert waits
// 10 minutes must fail.
func TestPromtoolCatchesABrokenRule(t *testing.T) {
	p := promtool(t)
	dir := t.TempDir()
	broken := strings.Replace(string(Rules), "expr: vramseal_shard_verified{job=\"vramseal\"} == 0\n",
		"expr: vramseal_shard_verified{job=\"vramseal\"} == 0\n        for: 10m\n", 1)
	if broken == string(Rules) {
		t.Fatal("could not break the seal-failure rule: its expr line changed; update this test")
	}
	if err := os.WriteFile(filepath.Join(dir, RulesFile), []byte(broken), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "tests"), 0o700); err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join("tests", "integrity.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tests", "integrity.yml"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p, "test", "rules", filepath.Join("tests", "integrity.yml"))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "VramsealSealVerificationFailed") {
		t.Fatalf("promtool accepted a seal-failure alert delayed by 10m (err=%v):\n%s", err, out)
	}
}

func TestEveryAlertIsComplete(t *testing.T) {
	f, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	alerts := f.Alerts()
	if len(alerts) < 10 {
		t.Fatalf("only %d alerts", len(alerts))
	}
	name := regexp.MustCompile(`^Vramseal[A-Z][A-Za-z]+$`)
	seen := map[string]bool{}
	for _, a := range alerts {
		if !name.MatchString(a.Alert) {
			t.Errorf("alert %q: name must be Vramseal + CamelCase", a.Alert)
		}
		if seen[a.Alert] {
			t.Errorf("alert %q defined twice", a.Alert)
		}
		seen[a.Alert] = true
		if s := a.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", a.Alert, s)
		}
		for _, k := range []string{"summary", "description", "runbook_url"} {
			if strings.TrimSpace(a.Annotations[k]) == "" {
				t.Errorf("alert %s: annotation %s missing", a.Alert, k)
			}
		}
		if want := RunbookBase + a.Alert + ".md"; a.Annotations["runbook_url"] != want {
			t.Errorf("alert %s: runbook_url %q, want %q", a.Alert, a.Annotations["runbook_url"], want)
		}
		runbook, err := os.ReadFile(filepath.Join("..", "docs", "runbooks", a.Alert+".md"))
		if err != nil {
			t.Errorf("alert %s: runbook: %v", a.Alert, err)
			continue
		}
		for _, section := range []string{"# " + a.Alert, "## What to check", "## What to do"} {
			if !bytes.Contains(runbook, []byte(section)) {
				t.Errorf("runbook %s.md lacks %q", a.Alert, section)
			}
		}
		if !strings.Contains(a.Expr, `job="vramseal"`) {
			t.Errorf("alert %s: every selector must name job=\"vramseal\": %s", a.Alert, a.Expr)
		}
	}
	// The alerts the project promises (issue 6).
	for _, want := range []string{
		"VramsealSealVerificationFailed", "VramsealVerificationStale", "VramsealAgentDown",
		"VramsealAgentAbsent", "VramsealCollectorFailing", "VramsealGPUDisappeared",
		"VramsealPolicyViolated", "VramsealAuditEventsLost", "VramsealAuditExportFailing",
		"VramsealAuditBacklogGrowing", "VramsealGPUUncorrectableECCErrors",
	} {
		if !seen[want] {
			t.Errorf("alert %s is missing", want)
		}
	}
	if a := alertNamed(alerts, "VramsealSealVerificationFailed"); a.Labels["severity"] != "critical" || a.For != "" {
		t.Errorf("VramsealSealVerificationFailed must be critical and fire on the first failure (no for:), got severity=%q for=%q", a.Labels["severity"], a.For)
	}
	// The user documentation lists every alert.
	doc, err := os.ReadFile(filepath.Join("..", "docs", "monitoring.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name := range seen {
		if !bytes.Contains(doc, []byte("`"+name+"`")) {
			t.Errorf("docs/monitoring.md does not list alert %s", name)
		}
	}
	// No runbook without an alert.
	files, _ := filepath.Glob(filepath.Join("..", "docs", "runbooks", "Vramseal*.md"))
	for _, fn := range files {
		if n := strings.TrimSuffix(filepath.Base(fn), ".md"); !seen[n] {
			t.Errorf("runbook %s has no alert", fn)
		}
	}
}

func alertNamed(rules []Rule, name string) Rule {
	for _, r := range rules {
		if r.Alert == name {
			return r
		}
	}
	return Rule{}
}

// promtoolTests is the part of promtool's unit-test format this check reads.
type promtoolTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name      string `yaml:"name"`
		AlertTest []struct {
			EvalTime  string `yaml:"eval_time"`
			AlertName string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestEveryAlertHasUnitTests checks the shape of the promtool tests: each
// alert is asserted silent before it fires, firing with its severity and
// all three annotations, and silent again after a later recovery.
func TestEveryAlertHasUnitTests(t *testing.T) {
	f, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	type timeline struct{ silentBefore, firing, silentAfter bool }
	cover := map[string]*timeline{}
	for _, fn := range testFiles(t) {
		data, err := os.ReadFile(fn)
		if err != nil {
			t.Fatal(err)
		}
		var pt promtoolTests
		dec := yaml.NewDecoder(bytes.NewReader(data))
		if err := dec.Decode(&pt); err != nil {
			t.Fatalf("%s: %v", fn, err)
		}
		if !slices.Equal(pt.RuleFiles, []string{"../" + RulesFile}) {
			t.Errorf("%s: rule_files %v, want [../%s]", fn, pt.RuleFiles, RulesFile)
		}
		for _, tc := range pt.Tests {
			seenFiring := map[string]bool{}
			var last time.Duration = -1
			for _, at := range tc.AlertTest {
				d, err := time.ParseDuration(at.EvalTime)
				if err != nil {
					t.Fatalf("%s/%s: eval_time %q: %v", fn, tc.Name, at.EvalTime, err)
				}
				if d <= last {
					t.Errorf("%s/%s: eval_time %s not after the previous one", fn, tc.Name, at.EvalTime)
				}
				last = d
				tl := cover[at.AlertName]
				if tl == nil {
					tl = &timeline{}
					cover[at.AlertName] = tl
				}
				if len(at.ExpAlerts) == 0 {
					if seenFiring[at.AlertName] {
						tl.silentAfter = true
					} else {
						tl.silentBefore = true
					}
					continue
				}
				seenFiring[at.AlertName] = true
				tl.firing = true
				for _, e := range at.ExpAlerts {
					if e.ExpLabels["severity"] == "" {
						t.Errorf("%s/%s %s at %s: severity label not asserted", fn, tc.Name, at.AlertName, at.EvalTime)
					}
					for _, k := range []string{"summary", "description", "runbook_url"} {
						if e.ExpAnnotations[k] == "" {
							t.Errorf("%s/%s %s at %s: annotation %s not asserted", fn, tc.Name, at.AlertName, at.EvalTime, k)
						}
					}
				}
			}
		}
	}
	for _, a := range f.Alerts() {
		tl := cover[a.Alert]
		switch {
		case tl == nil:
			t.Errorf("alert %s has no promtool test", a.Alert)
		case !tl.silentBefore || !tl.firing || !tl.silentAfter:
			t.Errorf("alert %s: tests must assert silent before (%v), firing (%v) and silent after recovery (%v)",
				a.Alert, tl.silentBefore, tl.firing, tl.silentAfter)
		}
	}
}

func TestParseRefusesGarbage(t *testing.T) {
	for _, in := range []string{"", "groups: []", "groups: {", "- a"} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) = nil error", in)
		}
	}
}

// TestParseKeepsEveryRuleKey parses a rule file that uses every key of
// Prometheus's rule file format (keep_firing_for, a group's query_offset,
// limit and labels) and writes it back: nothing may vanish on the way, or
// the generated PrometheusRule would silently lose it.
func TestParseKeepsEveryRuleKey(t *testing.T) {
	src, err := os.ReadFile(filepath.Join("testdata", "keep_firing_for.rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	rf, err := Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(rf)
	if err != nil {
		t.Fatal(err)
	}
	var want, got any
	if err := yaml.Unmarshal(src, &want); err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse lost or changed keys:\nin:\n%s\nout:\n%s", src, out)
	}
}

// TestParseRefusesUnknownKeys: a key that is not part of Prometheus's rule
// file format, on a rule or on a group, is an error naming it.
func TestParseRefusesUnknownKeys(t *testing.T) {
	for file, key := range map[string]string{
		"unknown_rule_key.rules.yml":  "keep_firing",
		"unknown_group_key.rules.yml": "evaluation_interval",
	} {
		src, err := os.ReadFile(filepath.Join("testdata", file))
		if err != nil {
			t.Fatal(err)
		}
		_, err = Parse(src)
		if err == nil {
			t.Errorf("%s: accepted the unknown key %s", file, key)
			continue
		}
		if !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %q does not name the key %s", file, err, key)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Rules)
	f.Add([]byte("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rf, err := Parse(data)
		if err == nil && len(rf.Groups) == 0 {
			t.Fatal("accepted a rule file without groups")
		}
	})
}
