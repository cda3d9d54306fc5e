// Package dashboards defines vramseal's Grafana dashboards as Go code with
// the Grafana Foundation SDK and renders them to the JSON committed under
// dashboards/json (`make generate`; a test fails when that JSON is stale).
//
// Three dashboards: Fleet overview, Node / GPU detail and Audit pipeline.
// Each has a Prometheus data source variable and the job, instance, gpu and
// shard_id template variables; every panel sets a unit and a description
// that says what to do when its value is bad.
//
// Nothing in the agent imports this package: the SDK never reaches the
// vramseal-agent binary.
package dashboards
