// Package k8scheck checks the Helm chart (deploy/helm/vramseal) the way a
// cluster would read it: a pinned Helm (VRAMSEAL_HELM, built by `make
// test`) lints and renders it for its defaults and each ci/*.yaml value set,
// and every rendered object is decoded strictly into its Go API type
// (k8s.io/api for the built-in kinds, prometheus-operator's for
// ServiceMonitor, PodMonitor and PrometheusRule), so a misspelt or
// misplaced field is an error instead of something the API server drops.
// The agent's own loader then reads the configuration the chart renders.
//
// It is its own module so that the Kubernetes trees stay out of the agent's
// go.mod. `make test` runs its tests.
package k8scheck
