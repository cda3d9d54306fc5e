package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/alerts"
	"github.com/vramseal/vramseal/internal/config"
)

// configKeys lists every key path of the configuration type t, as the
// schema must hold them.
func configKeys(t reflect.Type, prefix string, out *[]string) {
	for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeFor[time.Duration]() {
		return
	}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case tag == "-" || tag == "" || !f.IsExported():
		case opts == "inline":
			configKeys(f.Type, prefix, out)
		default:
			*out = append(*out, prefix+name)
			configKeys(f.Type, prefix+name+".", out)
		}
	}
}

// schemaKeys lists the key paths of an object schema.
func schemaKeys(s map[string]any, prefix string, out *[]string) {
	if items, ok := s["items"].(map[string]any); ok {
		s = items
	}
	props, _ := s["properties"].(map[string]any)
	for name, sub := range props {
		*out = append(*out, prefix+name)
		schemaKeys(sub.(map[string]any), prefix+name+".", out)
	}
	if len(props) > 0 && s["additionalProperties"] != false {
		*out = append(*out, prefix+"(unknown keys accepted)")
	}
}

// TestConfigSchemaFollowsTheTypes: every key of config.Config is in the
// committed schema under config, and nothing else; every mapping refuses
// unknown keys; durations are strings.
func TestConfigSchemaFollowsTheTypes(t *testing.T) {
	data, err := os.ReadFile(ValuesSchemaFile)
	if err != nil {
		t.Fatal(err)
	}
	var root map[string]any
	if err := json.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	cfg := root["properties"].(map[string]any)["config"].(map[string]any)
	var want, got []string
	configKeys(reflect.TypeFor[config.Config](), "", &want)
	schemaKeys(cfg, "", &got)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("the schema's config keys differ from config.Config's (run `make generate`):\n got %v\nwant %v", got, want)
	}
	interval := cfg["properties"].(map[string]any)["verify"].(map[string]any)["properties"].(map[string]any)["interval"].(map[string]any)
	if interval["type"] != "string" {
		t.Errorf("verify.interval: type %v, want string", interval["type"])
	}
	re := regexp.MustCompile(interval["pattern"].(string))
	for _, d := range []string{"5m", "90s", "2160h", "1h30m", "0", "1.5s", "250ms"} {
		if !re.MatchString(d) {
			t.Errorf("duration pattern refuses %q", d)
		}
	}
	for _, d := range []string{"300", "5 m", "5min", "-5m", ""} {
		if re.MatchString(d) {
			t.Errorf("duration pattern accepts %q", d)
		}
	}
	if root["additionalProperties"] != false {
		t.Error("the values schema accepts unknown top-level keys")
	}
}

// TestRuleOverridesNameEveryAlert: the schema lets prometheusRule.rules
// name each alert of the rule file and nothing else.
func TestRuleOverridesNameEveryAlert(t *testing.T) {
	s, err := ruleOverridesSchema(alerts.Rules)
	if err != nil {
		t.Fatal(err)
	}
	rf, _ := alerts.Load()
	var n int
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if _, ok := s["properties"].(schema)[r.Alert]; !ok {
				t.Errorf("alert %s has no override entry", r.Alert)
			}
			n++
		}
	}
	if len(s["properties"].(schema)) != n || s["additionalProperties"] != false {
		t.Errorf("%d override entries for %d alerts", len(s["properties"].(schema)), n)
	}
}

// TestChartFilesAreAllGenerated: the chart's files/ holds exactly the
// generated copies (a dashboard removed from dashboards/ leaves no stale copy).
func TestChartFilesAreAllGenerated(t *testing.T) {
	files, err := Generated()
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(filepath.Join(Chart, "files"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if _, ok := files[filepath.ToSlash(path)]; !ok {
			t.Errorf("%s is not generated: remove it, or generate it (deploy.Generated)", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
