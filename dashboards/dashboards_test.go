package dashboards

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestCommittedJSONIsFresh fails when dashboards/json differs from what the
// Go code renders: run `make generate` and commit.
func TestCommittedJSONIsFresh(t *testing.T) {
	all, err := All()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, d := range all {
		want[d.File] = true
		got, err := os.ReadFile(filepath.Join("json", d.File))
		if err != nil {
			t.Errorf("%v: run `make generate`", err)
			continue
		}
		if !bytes.Equal(got, d.JSON) {
			t.Errorf("json/%s is stale: run `make generate` and commit the result", d.File)
		}
	}
	files, _ := filepath.Glob(filepath.Join("json", "*.json"))
	for _, f := range files {
		if !want[filepath.Base(f)] {
			t.Errorf("%s is not rendered by the Go code: remove it", f)
		}
	}
}

func TestEveryPanelIsUsable(t *testing.T) {
	models, err := Models()
	if err != nil {
		t.Fatal(err)
	}
	if len(models) != 3 {
		t.Fatalf("%d dashboards, want 3", len(models))
	}
	whatToDo := regexp.MustCompile(`(?i)(runbook|check|see|follow|drain|fix|look|means|need|bad|critical|good|misconfiguration)`)
	for _, m := range models {
		ids := map[int]bool{}
		if len(m.Panels) < 6 {
			t.Errorf("%s: only %d panels", m.UID, len(m.Panels))
		}
		for _, p := range m.Panels {
			where := m.UID + "/" + p.Title
			if p.ID == 0 || ids[p.ID] {
				t.Errorf("%s: panel id %d missing or reused", where, p.ID)
			}
			ids[p.ID] = true
			if p.Unit == "" {
				t.Errorf("%s: no unit", where)
			}
			if len(p.Description) < 60 || !whatToDo.MatchString(p.Description) {
				t.Errorf("%s: description must say what a bad value means and what to do: %q", where, p.Description)
			}
			if p.Datasource != "${datasource}" {
				t.Errorf("%s: data source %q, want ${datasource}", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no query", where)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s/%s: empty query", where, tg.RefID)
				}
				if strings.Contains(tg.Expr, "vramseal_") && !strings.Contains(tg.Expr, `instance=~"$instance"`) {
					t.Errorf("%s/%s: query ignores the instance variable: %s", where, tg.RefID, tg.Expr)
				}
			}
		}
		var names []string
		for _, v := range m.Variables {
			names = append(names, v.Name)
			if v.Type == "query" && !strings.HasPrefix(v.Query, "label_values(") {
				t.Errorf("%s: variable %s: query %q", m.UID, v.Name, v.Query)
			}
		}
		want := []string{VarDatasource, VarJob, VarInstance, VarGPU}
		if m.UID != uidAudit {
			want = append(want, VarShard)
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s: variables %v, want %v", m.UID, names, want)
		}
	}
}

func TestParseModelRefusesBadInput(t *testing.T) {
	for _, in := range []string{"", "{", `{"uid": ""}`, `{"uid":"a","title":"b","templating":{"list":[{"name":"x","query":5}]}}`} {
		if _, err := ParseModel([]byte(in)); err == nil {
			t.Errorf("ParseModel(%q): no error", in)
		}
	}
}

func FuzzParseModel(f *testing.F) {
	all, err := All()
	if err != nil {
		f.Fatal(err)
	}
	for _, d := range all {
		f.Add(d.JSON)
	}
	f.Add([]byte(`{"uid":"a","title":"b","panels":[{"type":"row","panels":[{"type":"stat"}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseModel(data)
		if err == nil && (m.UID == "" || m.Title == "") {
			t.Fatal("accepted a dashboard without uid or title")
		}
	})
}
