package promqlcheck

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

// grafanaVars are the Grafana built-in interval variables and what they
// become for parsing (any valid duration does).
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "1m",
	"$__range", "1h",
)

// MetricNames returns the metric names an expression selects, sorted and
// de-duplicated. Template variables inside label values need no change;
// Grafana's interval variables are replaced before parsing. A selector
// without a metric name is an error: it could not be checked.
func MetricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", expr, err)
	}
	set := map[string]bool{}
	var walkErr error
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			walkErr = errors.Join(walkErr, fmt.Errorf("selector %s in %q has no metric name", vs, expr))
			return nil
		}
		set[name] = true
		return nil
	})
	if walkErr != nil {
		return nil, walkErr
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out, nil
}

var labelValues = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$`)

// VariableMetricNames returns the metric names a Grafana Prometheus
// variable query uses: label_values(selector, label) or a plain expression.
func VariableMetricNames(query string) ([]string, error) {
	if m := labelValues.FindStringSubmatch(query); m != nil {
		return MetricNames(m[1])
	}
	if strings.HasPrefix(strings.TrimSpace(query), "label_values(") {
		return nil, fmt.Errorf("variable query %q: want label_values(selector, label)", query)
	}
	return MetricNames(query)
}

// Known is the set of series names an agent exports.
type Known map[string]bool

// ParseExposition reads a Prometheus text exposition (a golden /metrics
// file) and returns every series name in it: a histogram family adds its
// _bucket, _sum and _count series, a summary its _sum and _count.
func ParseExposition(r io.Reader) (Known, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	k := Known{}
	for name, f := range fams {
		k[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			k[name+"_bucket"], k[name+"_sum"], k[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			k[name+"_sum"], k[name+"_count"] = true, true
		}
	}
	return k, nil
}

// LoadKnown reads the golden /metrics file at path (cmd/agent's end-to-end
// test writes it). A missing, unreadable, broken or empty file is an error:
// there is no list to fall back on that could drift from what the agent
// really exports.
func LoadKnown(path string) (Known, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("golden metrics file %s does not exist: the agent's end-to-end test writes it (go test ./cmd/agent -run TestMetricsGolden -update)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("golden metrics: %w", err)
	}
	defer f.Close()
	k, err := ParseExposition(f)
	if err != nil {
		return nil, fmt.Errorf("golden metrics %s: %w", path, err)
	}
	if len(k) == 0 {
		return nil, fmt.Errorf("golden metrics %s: no metrics", path)
	}
	return k, nil
}

// CheckRules parses a rule file with Prometheus's own rule parser
// (model/rulefmt, unknown keys refused), which also checks every
// expression, duration, label name and template: what `promtool check
// rules` and a Prometheus server loading the file would refuse, it refuses.
// A second YAML document, which Prometheus ignores, is an error.
func CheckRules(data []byte) error {
	var warnings []string
	logger := slog.New(&collectHandler{msgs: &warnings})
	_, errs := rulefmt.Parse(data, false, model.UTF8Validation, parser.NewParser(parser.Options{}), logger)
	for _, w := range warnings {
		errs = append(errs, errors.New(w))
	}
	return errors.Join(errs...)
}

// collectHandler is a slog.Handler that keeps each message, so that the
// rule parser's warnings count as errors.
type collectHandler struct{ msgs *[]string }

func (h *collectHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *collectHandler) Handle(_ context.Context, r slog.Record) error {
	*h.msgs = append(*h.msgs, r.Message)
	return nil
}
func (h *collectHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *collectHandler) WithGroup(string) slog.Handler      { return h }
