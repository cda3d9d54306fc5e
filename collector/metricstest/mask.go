package metricstest

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Masked values: a masked sample value is written as MaskedValue, a masked
// label value as MaskedLabel.
const (
	MaskedValue = "NaN"
	MaskedLabel = "MASKED"
)

// Rules say what Mask hides.
type Rules struct {
	// MaskValues reports whether the values of a family are masked.
	MaskValues func(family string) bool
	// MaskLabels lists, per family name, the labels whose values are masked.
	MaskLabels map[string][]string
	// Drop reports whether a family is left out altogether (nil: none is).
	Drop func(family string) bool
}

// DefaultRules mask what differs between two runs of the agent on the same
// simulated GPUs and shards: timestamps and durations (families named
// *_timestamp_seconds or *_duration_seconds, histograms included), the Go
// runtime, process and promhttp statistics, and the build's version,
// revision and Go version. Everything else (sizes, counts, digests, ids,
// results) is kept, so a change in behaviour shows as a diff.
var DefaultRules = Rules{
	MaskValues: func(f string) bool {
		return strings.HasSuffix(f, "_timestamp_seconds") || strings.HasSuffix(f, "_duration_seconds") ||
			strings.HasPrefix(f, "go_") || strings.HasPrefix(f, "process_") || strings.HasPrefix(f, "promhttp_")
	},
	MaskLabels: map[string][]string{
		"vramseal_build_info": {"version", "revision", "goversion"},
		"go_info":             {"version"},
	},
}

// Mask parses a scrape in the Prometheus text format and writes it back in
// a stable form: families sorted by name, series sorted by labels, no
// timestamps, the values and label values the rules name masked. Every
// series is kept (unless rules.Drop drops its family).
func Mask(r io.Reader, rules Rules) ([]byte, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metricstest: parse: %w", err)
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		if rules.Drop == nil || !rules.Drop(n) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	var out bytes.Buffer
	for _, n := range names {
		mf := fams[n]
		if labels := rules.MaskLabels[n]; len(labels) > 0 {
			for _, m := range mf.GetMetric() {
				for _, lp := range m.GetLabel() {
					if slices.Contains(labels, lp.GetName()) {
						lp.Value = ptr(MaskedLabel)
					}
				}
			}
		}
		for _, m := range mf.GetMetric() {
			m.TimestampMs = nil
			slices.SortFunc(m.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
		slices.SortFunc(mf.Metric, func(a, b *dto.Metric) int { return strings.Compare(labelKey(a), labelKey(b)) })
		var fam bytes.Buffer
		if _, err := expfmt.MetricFamilyToText(&fam, mf); err != nil {
			return nil, fmt.Errorf("metricstest: write %s: %w", n, err)
		}
		if rules.MaskValues != nil && rules.MaskValues(n) {
			maskValues(&out, fam.Bytes())
		} else {
			out.Write(fam.Bytes())
		}
	}
	return out.Bytes(), nil
}

// maskValues copies text lines, replacing each sample's value (the last
// field: timestamps were removed) with MaskedValue.
func maskValues(out *bytes.Buffer, text []byte) {
	for _, line := range strings.SplitAfter(string(text), "\n") {
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			out.WriteString(line)
			continue
		}
		body := strings.TrimSuffix(line, "\n")
		i := strings.LastIndexByte(body, ' ')
		out.WriteString(body[:i+1] + MaskedValue + "\n")
	}
}

// labelKey is a series' labels as one sortable string.
func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, lp := range m.GetLabel() {
		b.WriteString(lp.GetName())
		b.WriteByte(0)
		b.WriteString(lp.GetValue())
		b.WriteByte(0)
	}
	return b.String()
}

func ptr[T any](v T) *T { return &v }

// Samples counts the sample lines of a text exposition: the lines that are
// neither empty nor comments (# HELP, # TYPE).
func Samples(text string) int {
	n := 0
	for _, l := range strings.Split(text, "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			n++
		}
	}
	return n
}
