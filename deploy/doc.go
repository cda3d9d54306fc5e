// Package deploy holds vramseal's deployment files and generates the ones
// that derive from other sources: the PrometheusRule (from
// alerts/vramseal.rules.yml) and the Grafana sidecar ConfigMap (from the
// dashboards package), so Prometheus-operator users get exactly the rules and
// dashboards that are tested. `make generate` writes them; a test fails when
// the committed files are stale.
//
// Layout: kubernetes/ (DaemonSet, Service, ServiceMonitor, PrometheusRule,
// dashboards ConfigMap, config ConfigMap, Secret template, kustomization),
// systemd/ (service and socket units, sample config), prometheus/ (a plain
// scrape config with the job name the rules expect) and Containerfile.
package deploy
