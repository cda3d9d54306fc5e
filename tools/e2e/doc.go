// Package e2e proves vramseal's dashboards and alert rules against a real
// Prometheus (the pinned build `make test` provides as VRAMSEAL_PROMETHEUS).
//
// The harness starts Prometheus on loopback with a temporary data directory,
// one-second scrape and evaluation intervals and alerts/vramseal.rules.yml,
// then runs every query of every dashboard panel with its template
// variables resolved and substituted, and watches /api/v1/alerts.
//
// Two tests use it:
//   - TestHarnessAgainstStaticTarget (always with `make test`): a small
//     exposition served by the test itself stands in for the agent, which
//     proves the harness, the queries and the rules on a real Prometheus;
//   - TestAgentEndToEnd (VRAMSEAL_AGENT_E2E=1, i.e. `make test AGENT_E2E=1`,
//     with VRAMSEAL_AGENT_BIN): the real vramseal-agent on simulated GPUs,
//     corrupted with `debug corrupt`, plus ECC, GPU-loss and spool scenarios.
package e2e
