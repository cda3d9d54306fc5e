// Package collector exports vramseal's Prometheus metrics: GPU telemetry
// (NVML or the simulated GPU), seal and verification state, the audit
// pipeline, the VRAM-only policy's verdict, and build and agent info.
// docs/metrics.md lists every metric; `make generate` rebuilds it from a
// registry and a test fails when it is stale.
//
// One file per collector, in the node_exporter manner: info.go, gpu.go,
// seal.go, audit.go, policy.go. Each reports
// vramseal_collector_success{collector} and
// vramseal_collector_duration_seconds{collector}. A source that is missing
// for an expected reason (no NVML on the machine) is "no data": logged at
// debug level, success 0, never a crash.
//
// GPU telemetry is read in the background (Set.Run) every GPUInterval, each
// read bounded by GPUTimeout, and scrapes are served from that cache, so a
// hung driver never hangs a scrape: a read that hangs makes success 0 and
// no second read starts until it returns. The seal state is read from the
// sealer at each scrape, so a shard's series appear when it is sealed and
// disappear when it is released. Counters of operations come from an
// Observer the sealer calls; their series exist at zero for every known GPU
// and result from the start.
//
// # Wiring (cmd/agent)
//
// The Observer must exist before the Sealer, which takes it in its Config:
//
//	obs := collector.NewObserver(gpuIndexes)              // e.g. []int{0, 1}
//	s, err := sealer.New(sealer.Config{..., Observer: obs})
//	gpu := simsource.New(simDevices)                      // device: sim (collector/simsource)
//	// or: gpu := collector.NewNVMLSource(nvml.System(), log); defer gpu.Close()
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
//	metrics, err := collector.Register(reg, collector.Options{
//		WorkerID: cfg.WorkerID, Device: "sim",            // or "cuda"
//		GPU: gpu,
//		Sealer: s, Observer: obs,
//		Schedule: schedule,                               // *sealer.Schedule (OverdueShards)
//		VerifyInterval: cfg.Verify.Interval,
//		AuditCounters: counters,                          // the *audit.Counters the emitter counts into
//		AuditStats: pipeline,                             // the *audit/otel.Pipeline (its Stats)
//		Policy: pol,                                      // *policy.Policy (Compliant)
//		Logger: log,
//	})
//	go metrics.Run(ctx)                                   // background GPU reads until ctx ends
//	mux.Handle(*telemetryPath, collector.Handler(reg, log)) // promhttp, gzip at BestSpeed, instrumented
//
// The mux is served with github.com/prometheus/exporter-toolkit's
// web.ListenAndServe, which gives --web.config.file (TLS, basic auth);
// web_test.go proves such a config file works with a real HTTPS client.
//
// collector/metricstest masks the non-deterministic values of a scrape for
// golden-file tests.
package collector
