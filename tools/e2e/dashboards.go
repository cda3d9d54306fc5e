package e2e

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/vramseal/vramseal/dashboards"
)

// PanelResult is the outcome of one dashboard panel query.
type PanelResult struct {
	Dashboard string // uid
	Panel     string // title
	RefID     string
	Expr      string // with the template variables substituted
	Series    int    // series returned (0: the panel shows "No data")
	Err       error
}

// Key names the query for lists of expected-empty panels: "uid/title".
func (r PanelResult) Key() string { return r.Dashboard + "/" + r.Panel }

func (r PanelResult) String() string {
	if r.Err != nil {
		return fmt.Sprintf("%s/%s: %v", r.Key(), r.RefID, r.Err)
	}
	return fmt.Sprintf("%s/%s: %d series from %s", r.Key(), r.RefID, r.Series, r.Expr)
}

// Selection picks the template variable values, as a user would.
type Selection struct {
	// All selects "All" (the variable's allValue) for every multi-value
	// variable; otherwise Prefer or the first value the variable offers.
	All    bool
	Prefer map[string]string
}

var labelValuesQuery = regexp.MustCompile(`^\s*label_values\(\s*(.+?)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)\s*$`)

// resolveVariables runs each query variable in order against p, as Grafana
// does (each may use the ones before it), and returns name → value.
func resolveVariables(ctx context.Context, p *Prometheus, m dashboards.Model, sel Selection) (map[string]string, error) {
	vals := map[string]string{}
	for _, v := range m.Variables {
		if v.Type != "query" {
			continue
		}
		if sel.All && v.IncludeAll {
			vals[v.Name] = v.AllValue
			continue
		}
		mm := labelValuesQuery.FindStringSubmatch(substitute(v.Query, vals, p.Interval))
		if mm == nil {
			return nil, fmt.Errorf("%s: variable %s: query %q is not label_values(selector, label)", m.UID, v.Name, v.Query)
		}
		options, err := p.LabelValues(ctx, mm[2], mm[1])
		if err != nil {
			return nil, fmt.Errorf("%s: variable %s: %w", m.UID, v.Name, err)
		}
		sort.Strings(options)
		switch {
		case len(options) == 0 && v.IncludeAll:
			vals[v.Name] = v.AllValue
		case len(options) == 0:
			return nil, fmt.Errorf("%s: variable %s: %s offers no value", m.UID, v.Name, mm[0])
		default:
			vals[v.Name] = options[0]
			for _, o := range options {
				if o == sel.Prefer[v.Name] {
					vals[v.Name] = o
				}
			}
		}
	}
	return vals, nil
}

// substitute replaces $name, ${name} and [[name]] with their values (the
// longest names first) and Grafana's interval variables with durations
// that suit the scrape interval.
func substitute(expr string, vals map[string]string, interval time.Duration) string {
	names := make([]string, 0, len(vals))
	for n := range vals {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return len(names[i]) > len(names[j]) })
	var pairs []string
	// Grafana's $__rate_interval is max(4 × scrape interval, step + scrape
	// interval); 10 scrape intervals leave room for a missed scrape.
	rate := (10 * interval).String()
	pairs = append(pairs, "$__rate_interval", rate, "${__rate_interval}", rate,
		"$__interval", interval.String(), "$__range", "5m")
	for _, n := range names {
		pairs = append(pairs, "${"+n+"}", vals[n], "[["+n+"]]", vals[n], "$"+n, vals[n])
	}
	return strings.NewReplacer(pairs...).Replace(expr)
}

// RunDashboards executes every query of every panel of models against p
// with the template variables chosen by sel: time series panels as range
// queries over the last span, stat and table panels as instant queries,
// as Grafana runs them.
func RunDashboards(ctx context.Context, p *Prometheus, models []dashboards.Model, sel Selection, span time.Duration) ([]PanelResult, error) {
	var out []PanelResult
	for _, m := range models {
		vals, err := resolveVariables(ctx, p, m, sel)
		if err != nil {
			return nil, err
		}
		for _, panel := range m.Panels {
			for _, tg := range panel.Targets {
				r := PanelResult{Dashboard: m.UID, Panel: panel.Title, RefID: tg.RefID, Expr: substitute(tg.Expr, vals, p.Interval)}
				var series []Series
				if panel.Type == "timeseries" {
					series, r.Err = p.QueryRange(ctx, r.Expr, span)
				} else {
					series, r.Err = p.Query(ctx, r.Expr)
				}
				r.Series = len(series)
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// CheckPanels returns one problem per failed query and per query without
// data whose panel is not listed in mayBeEmpty (key "uid/title" → reason).
func CheckPanels(results []PanelResult, mayBeEmpty map[string]string) []string {
	var problems []string
	for _, r := range results {
		switch {
		case r.Err != nil:
			problems = append(problems, "query failed: "+r.String())
		case r.Series == 0:
			if _, ok := mayBeEmpty[r.Key()]; !ok {
				problems = append(problems, "no data: "+r.String())
			}
		}
	}
	return problems
}
