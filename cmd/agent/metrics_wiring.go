package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/collector/simsource"
	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/nvml"
	"github.com/vramseal/vramseal/internal/podresources"
)

// The metrics are wired in two steps, because the sealer reports every
// seal, allocation and verification outcome to an Observer that must exist
// before the sealer: newSealObserver, then (once every part exists)
// newRegistry.

// newSealObserver returns the sealer's Observer for the GPUs gpus.
func newSealObserver(gpus []int) *collector.Observer { return collector.NewObserver(gpus) }

// simGPUInterval is how often the simulated GPUs' telemetry is read: a
// copy of a few counters in host memory, so faults injected with `debug`
// (ECC errors, a lost GPU) show on /metrics within a second, in the demo
// and the end-to-end tests. NVML keeps the collector's default.
const simGPUInterval = time.Second

// newRegistry builds the registry /metrics serves: the Go and process
// collectors and the vramseal collectors, reading from the agent's parts.
// It is the one place collectors are registered. The returned Set reads
// GPU telemetry in the background once run (Set.Run).
func newRegistry(a *agent) (*prometheus.Registry, *collector.Set, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	var gpu collector.GPUSource
	var gpuInterval time.Duration // the collector's default (15s) for NVML
	procs := collector.Processes{
		AgentPID: int64(os.Getpid()), HostPIDNamespace: collector.HostPIDNamespace("/proc"),
		Labels: a.cfg.Metrics.ProcessLabels, LabelLimit: a.cfg.Metrics.ProcessLabelLimit,
		ForeignEvents: a.cfg.Metrics.ForeignProcessEvents, ForeignEventInterval: a.cfg.Metrics.ForeignProcessEventInterval,
	}
	if a.sims != nil {
		// The simulated GPUs report the agent itself, by its pid in its own
		// namespace, as the process holding their memory.
		gpu = simsource.New(a.sims, simsource.WithAgentPID(os.Getpid()))
		gpuInterval = simGPUInterval
		procs.HostPIDNamespace = true
	} else {
		src := collector.NewNVMLSource(nvml.System(), a.log.WithField(logfield.Component, "nvml"))
		a.closers = append(a.closers, src.Close)
		gpu = src
	}
	opts := collector.Options{
		WorkerID: a.cfg.WorkerID, Device: deviceLabel(a.cfg), GPU: gpu, GPUInterval: gpuInterval,
		Sealer: a.sealer, Observer: a.observer, Schedule: a.schedule, VerifyInterval: a.cfg.Verify.Interval,
		AuditCounters: a.audit.Counters, AuditStats: a.audit.Stats, Policy: a.policy, Control: a.controlCounters,
		Processes: procs, Emitter: a.audit.Emitter,
		Logger: a.log.WithField(logfield.Component, "metrics"),
	}
	opts.ConfigReloads = a.reloads
	if sock := a.cfg.Kubernetes.PodResourcesSocket; sock != "" {
		c, err := podresources.New(sock)
		if err != nil {
			return nil, nil, fmt.Errorf("metrics: %w", err)
		}
		a.closers = append(a.closers, c.Close)
		opts.Pods = podresources.NewSource(c)
	}
	set, err := collector.Register(reg, opts)
	if err != nil {
		return nil, nil, errors.Join(errors.New("metrics"), err)
	}
	return reg, set, nil
}

// deviceLabel is the device the metrics name: sim or cuda.
func deviceLabel(cfg *config.Config) string {
	if cfg.Device == config.DeviceSim {
		return "sim"
	}
	return "cuda"
}
