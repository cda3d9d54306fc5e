// Package k8scheck checks the Kubernetes manifests under deploy/kubernetes
// the way a cluster would read them: the kustomization is rendered with
// kustomize's own library (what `kubectl kustomize` and `kubectl apply -k`
// run), and every object is decoded strictly into its Go API type
// (k8s.io/api for the built-in kinds, prometheus-operator's for
// ServiceMonitor and PrometheusRule), so a misspelt or misplaced field is an
// error instead of something the API server drops.
//
// It is its own module so that the Kubernetes and kustomize trees stay out
// of the agent's go.mod. `make test` runs its tests.
package k8scheck
