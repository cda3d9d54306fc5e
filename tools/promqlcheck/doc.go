// Package promqlcheck checks that every metric the shipped dashboards and
// alert rules query is one vramseal-agent exports, so that a renamed metric
// breaks the build instead of a dashboard.
//
// It is its own module because the PromQL parser comes with the whole
// github.com/prometheus/prometheus tree, which must stay out of the agent's
// go.mod. `make test` runs its tests.
package promqlcheck
