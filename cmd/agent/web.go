package main

import (
	"fmt"
	"html"
	"net/http"

	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/vramseal/vramseal/collector"
)

// newWebHandler serves the landing page, /healthz, /readyz and the
// registry at telemetryPath.
func newWebHandler(a *agent, telemetryPath string) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle(telemetryPath, collector.Handler(a.registry, a.log.WithField(logFieldComponent, "metrics")))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ok, _, why := a.ready()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", why)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	desc := "Seals model shards in GPU memory, re-verifies them and audits every step."
	name := "vramseal agent"
	if a.sims != nil {
		name = "vramseal agent (SIMULATED GPUs)"
		desc += " This agent runs on SIMULATED GPUs (device: sim), for tests and demos only."
	}
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name: name, Description: desc, Version: version.Info(), Profiling: "false",
		ExtraHTML: fmt.Sprintf("<p>Worker <code>%s</code>, device <code>%s</code>.</p>", html.EscapeString(a.cfg.WorkerID), html.EscapeString(a.cfg.Device)),
		Links: []web.LandingLinks{
			{Address: telemetryPath, Text: "Metrics"},
			{Address: "/healthz", Text: "Health", Description: "200 while the agent runs"},
			{Address: "/readyz", Text: "Readiness", Description: "200 once every declared shard is sealed"},
		},
	})
	if err != nil {
		return nil, err
	}
	mux.Handle("/", landing)
	return mux, nil
}
