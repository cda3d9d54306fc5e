package main

import (
	"fmt"
	"net/http"

	"github.com/prometheus/common/version"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/statuspage"
)

// newWebHandler serves the status page at /, /healthz, /readyz and the
// registry at telemetryPath. The web server wraps it with the TLS and
// basic auth of --web.config.file, so the page is behind the same
// protection as the metrics.
func newWebHandler(a *agent, telemetryPath string) (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle(telemetryPath, collector.Handler(a.registry, a.log.WithField(logfield.Component, "metrics")))
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
	mode, err := statuspage.ParseMode(a.cfg.Web.StatusPage)
	if err != nil {
		return nil, err
	}
	mux.Handle("/", statuspage.Handler(a.statusSource(telemetryPath), mode, nil, a.log.WithField(logfield.Component, "web")))
	return mux, nil
}

// statusSource is the status page's view of the agent: the parts the
// metrics collectors read.
func (a *agent) statusSource(telemetryPath string) statuspage.Source {
	return statuspage.Source{
		WorkerID: a.cfg.WorkerID, Device: deviceLabel(a.cfg), Version: version.Version, Simulated: a.sims != nil,
		VerifyInterval: a.schedule.Interval(),
		Ready: func() (bool, string) {
			ok, _, why := a.ready()
			return ok, why
		},
		Links: []statuspage.Link{
			{Href: telemetryPath, Text: "Metrics"},
			{Href: "/healthz", Text: "Health", Description: "200 while the agent runs"},
			{Href: "/readyz", Text: "Readiness", Description: "200 once every declared shard is sealed"},
		},
		Shards: a.sealer, Schedule: a.schedule, Policy: a.policy, Telemetry: a.metrics,
		Audit: a.audit.Stats, Events: a.audit.Recent,
	}
}
