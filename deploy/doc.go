// Package deploy holds vramseal's deployment files and generates the ones
// that derive from other sources, so that users get exactly the rules,
// dashboards and configuration that are tested: the Helm chart's
// values.schema.json (from the agent's configuration types in
// internal/config, and the alert names), and the chart's copies of
// alerts/vramseal.rules.yml and of the dashboards. `make generate` writes
// them (deploy/cmd/render); a test fails when the committed files are stale.
//
// Layout: helm/vramseal (the chart: the one way to deploy on Kubernetes),
// systemd/ (service and socket units, sample config), prometheus/ (a plain
// scrape config with the job name the rules expect) and Containerfile.
// tools/k8scheck renders the chart with a pinned Helm and decodes every
// object strictly.
package deploy
