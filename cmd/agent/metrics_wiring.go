package main

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vramseal/vramseal/sealer"
)

// newRegistry builds the registry /metrics serves. It is the one place
// collectors are registered: the vramseal collectors (collector/) are added
// here, reading from the agent (a.sealer, a.schedule, a.sims and
// a.gpus.cudaDevs, a.policy.Compliant, a.ready, a.audit.Counters).
func newRegistry(a *agent) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	_ = a
	return reg
}

// newSealObserver returns what the sealer reports every seal, allocation
// and verification outcome to (sealer.Observer), for the counters and the
// duration histogram. None yet: the vramseal collector returns its own here.
func newSealObserver() sealer.Observer { return nil }
