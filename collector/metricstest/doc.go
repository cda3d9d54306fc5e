// Package metricstest helps tests of vramseal's /metrics: Mask turns a
// scrape into a stable text, for golden files that list every series the
// agent serves (every name and label set) while the values that change
// from run to run (timestamps, durations, runtime statistics, build
// versions) are masked.
//
// The golden end-to-end test of the agent (cmd/agent/testdata/metrics.golden)
// is meant to be written as:
//
//	body := scrape(agentURL + "/metrics")
//	got, err := metricstest.Mask(strings.NewReader(body), metricstest.DefaultRules)
//	// compare got with the golden file; rewrite it with -update
//
// CheckDocumented checks a scrape against docs/metrics.md (every vramseal_
// family listed, with its type).
//
// The masked text is still valid exposition format (masked values are NaN,
// masked label values are "MASKED"), so `promtool check metrics` runs on the
// golden file too.
package metricstest
