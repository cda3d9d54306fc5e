package alerts

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"
)

// RulesFile is the name of the rules file in this directory.
const RulesFile = "vramseal.rules.yml"

// RunbookBase is the address every runbook_url starts with; the rest is
// the alert name and ".md", a file under docs/runbooks/.
const RunbookBase = "https://github.com/vramseal/vramseal/blob/main/docs/runbooks/"

// Rules is the content of vramseal.rules.yml.
//
//go:embed vramseal.rules.yml
var Rules []byte

// RuleFile is the Prometheus rule file format. Its fields are every key
// Prometheus's own parser (model/rulefmt) accepts, so a rule file written
// for Prometheus passes through Parse, and on into the generated
// PrometheusRule, without losing a key.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name        string            `yaml:"name"`
	Interval    string            `yaml:"interval,omitempty"`
	QueryOffset string            `yaml:"query_offset,omitempty"`
	Limit       int               `yaml:"limit,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Rules       []Rule            `yaml:"rules"`
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert         string            `yaml:"alert,omitempty"`
	Record        string            `yaml:"record,omitempty"`
	Expr          string            `yaml:"expr"`
	For           string            `yaml:"for,omitempty"`
	KeepFiringFor string            `yaml:"keep_firing_for,omitempty"`
	Labels        map[string]string `yaml:"labels,omitempty"`
	Annotations   map[string]string `yaml:"annotations,omitempty"`
}

// Parse decodes a rule file, refusing unknown keys (as Prometheus does), so
// that a misspelt key is an error rather than a rule that silently lacks it.
// It checks the format only; tools/promqlcheck checks the file with
// Prometheus's own rule parser (expressions, durations, templates).
func Parse(data []byte) (RuleFile, error) {
	var f RuleFile
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		if errors.Is(err, io.EOF) {
			return RuleFile{}, fmt.Errorf("parse rules: empty file")
		}
		return RuleFile{}, fmt.Errorf("parse rules: %w", err)
	}
	if len(f.Groups) == 0 {
		return RuleFile{}, fmt.Errorf("parse rules: no groups")
	}
	return f, nil
}

// Load parses the shipped rules.
func Load() (RuleFile, error) { return Parse(Rules) }

// Alerts returns every alerting rule of f, in file order.
func (f RuleFile) Alerts() []Rule {
	var out []Rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}
