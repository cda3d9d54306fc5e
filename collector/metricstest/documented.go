package metricstest

import (
	"bufio"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// docRow matches a metric's row in docs/metrics.md: | `name` | type | ...
var docRow = regexp.MustCompile("^\\| `([a-zA-Z_:][a-zA-Z0-9_:]*)` \\| ([a-z]+) \\|")

// Documented reads the metric table of docs/metrics.md: name to type.
func Documented(doc io.Reader) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(doc)
	for sc.Scan() {
		if m := docRow.FindStringSubmatch(sc.Text()); m != nil {
			out[m[1]] = m[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("metricstest: read docs: %w", err)
	}
	return out, nil
}

// CheckDocumented returns an error naming every family of a scrape whose
// name starts with prefix (e.g. "vramseal_") that docs/metrics.md does not
// list, or lists with another type.
func CheckDocumented(scrape, doc io.Reader, prefix string) error {
	documented, err := Documented(doc)
	if err != nil {
		return err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(scrape)
	if err != nil {
		return fmt.Errorf("metricstest: parse: %w", err)
	}
	var problems []string
	for name, mf := range fams {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		typ := strings.ToLower(mf.GetType().String())
		switch d, ok := documented[name]; {
		case !ok:
			problems = append(problems, name+" is served but not documented")
		case d != typ:
			problems = append(problems, fmt.Sprintf("%s is served as a %s but documented as a %s", name, typ, d))
		}
	}
	if len(problems) > 0 {
		slices.Sort(problems)
		return fmt.Errorf("docs/metrics.md is out of date: %s", strings.Join(problems, "; "))
	}
	return nil
}
