// Package promqlcheck checks the shipped dashboards and alert rules with
// Prometheus's own parsers: every metric they query must be one
// vramseal-agent exports (per the golden /metrics file that cmd/agent's
// end-to-end test writes), so that a renamed metric breaks the build instead
// of a dashboard; and alerts/vramseal.rules.yml must pass Prometheus's rule
// parser (model/rulefmt), as a Prometheus server loading it would.
//
// It is its own module because the PromQL and rule parsers come with the
// whole github.com/prometheus/prometheus tree, which must stay out of the
// agent's go.mod. `make test` runs its tests.
package promqlcheck
