package alerts

import (
	_ "embed"
	"fmt"

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

// RuleFile is the Prometheus rule file format (the parts we use).
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of rules.
type RuleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is one alerting or recording rule.
type Rule struct {
	Alert       string            `yaml:"alert,omitempty"`
	Record      string            `yaml:"record,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// Parse decodes a rule file, refusing unknown keys.
func Parse(data []byte) (RuleFile, error) {
	var f RuleFile
	if err := yaml.Unmarshal(data, &f); err != nil {
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
