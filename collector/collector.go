package collector

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// Namespace is the prefix of every vramseal metric.
const Namespace = "vramseal"

// Options are what the collectors read. Every source is optional: a nil
// one means its metrics are not exported (its collector still reports
// vramseal_collector_success).
type Options struct {
	// WorkerID and Device ("sim" or "cuda") label vramseal_agent_info.
	WorkerID string
	Device   string

	// GPU is where GPU telemetry comes from (NewNVMLSource or
	// collector/simsource for simulated GPUs). It is read in the background by Run, every
	// GPUInterval (15s when 0), each read bounded by GPUTimeout (5s when 0).
	GPU         GPUSource
	GPUInterval time.Duration
	GPUTimeout  time.Duration

	// Sealer is the seal state read at each scrape (a *sealer.Sealer).
	Sealer SealState
	// Observer is the one given to the Sealer (sealer.Config.Observer);
	// its counters are exported with the seal state.
	Observer *Observer
	// Schedule reports overdue verifications; VerifyInterval is the
	// configured verification interval (not exported when 0). As for every
	// source, leave it nil (not a typed nil pointer) when there is none.
	Schedule       Schedule
	VerifyInterval time.Duration

	// ConfigReloads is the outcome of the configuration reloads (the
	// config collector; left out when nil).
	ConfigReloads *ConfigReloads

	// AuditCounters are the emitter's counters; AuditStats the spool's.
	AuditCounters *audit.Counters
	AuditStats    AuditStats

	// Policy reports the VRAM-only policy's verdict per GPU.
	Policy Compliance

	// Control counts the control API's refusals (rate limit).
	Control *ControlCounters

	// Processes configures the attribution of the GPU processes.
	Processes Processes
	// Pods says which pod uses each GPU (vramseal_gpu_pod_info; left out
	// when nil).
	Pods PodSource
	// Emitter receives the GPU events (vramseal.gpu.xid,
	// vramseal.gpu.foreign_process); none are emitted when nil.
	Emitter audit.Emitter

	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// subCollector is one collector: it writes its metrics at each scrape and
// reports whether it could. Its vramseal_collector_success follows the error.
type subCollector interface {
	describe(ch chan<- *prometheus.Desc)
	update(ch chan<- prometheus.Metric) error
}

// named pairs a collector with the name in its `collector` label.
type named struct {
	name string
	c    subCollector
}

// Set is every vramseal collector as one prometheus.Collector. Register it
// with a registry, and call Run for the background GPU reads.
type Set struct {
	collectors []named
	gpu        *gpuCollector
	log        logrus.FieldLogger

	successDesc  *prometheus.Desc
	durationDesc *prometheus.Desc
}

// New returns the collectors for opts.
func New(opts Options) (*Set, error) {
	if opts.Logger == nil {
		opts.Logger = logrus.StandardLogger()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.GPUInterval < 0 || opts.GPUTimeout < 0 || opts.VerifyInterval < 0 {
		return nil, errors.New("collector: negative interval or timeout")
	}
	if opts.GPUInterval == 0 {
		opts.GPUInterval = 15 * time.Second
	}
	if opts.GPUTimeout == 0 {
		opts.GPUTimeout = 5 * time.Second
	}
	if opts.Device != "" && opts.Device != "sim" && opts.Device != "cuda" {
		return nil, fmt.Errorf("collector: device %q: want sim or cuda", opts.Device)
	}
	s := &Set{
		log: opts.Logger,
		successDesc: prometheus.NewDesc(Namespace+"_collector_success",
			"Whether the collector's last scrape succeeded (1) or not (0).", []string{"collector"}, nil),
		durationDesc: prometheus.NewDesc(Namespace+"_collector_duration_seconds",
			"How long the collector's last scrape took.", []string{"collector"}, nil),
	}
	s.gpu = newGPUCollector(opts)
	s.collectors = []named{
		{"info", newInfoCollector(opts)},
		{"gpu", s.gpu},
		{"seal", newSealCollector(opts)},
		{"audit", newAuditCollector(opts)},
		{"policy", newPolicyCollector(opts)},
		{"control", newControlCollector(opts)},
	}
	if opts.ConfigReloads != nil {
		s.collectors = append(s.collectors, named{"config", newConfigCollector(opts.ConfigReloads)})
	}
	return s, nil
}

// Register creates the collectors for opts and registers them with reg.
// It returns the Set, whose Run the caller starts.
func Register(reg prometheus.Registerer, opts Options) (*Set, error) {
	s, err := New(opts)
	if err != nil {
		return nil, err
	}
	if err := reg.Register(s); err != nil {
		return nil, fmt.Errorf("collector: register: %w", err)
	}
	return s, nil
}

// Run reads the GPU telemetry at once and then every GPUInterval, in the
// background of scrapes, until ctx ends. It returns nil then.
func (s *Set) Run(ctx context.Context) error {
	return s.gpu.run(ctx)
}

// Refresh reads the GPU telemetry now, waiting at most GPUTimeout, and
// returns the read's error. Scrapes keep being served from the cache.
func (s *Set) Refresh(ctx context.Context) error {
	return s.gpu.refresh(ctx)
}

// Describe implements prometheus.Collector.
func (s *Set) Describe(ch chan<- *prometheus.Desc) {
	ch <- s.successDesc
	ch <- s.durationDesc
	for _, c := range s.collectors {
		c.c.describe(ch)
	}
}

// Collect implements prometheus.Collector: it runs every collector and
// reports its success and duration.
func (s *Set) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.collectors {
		start := time.Now()
		err := s.update(c, ch)
		d := time.Since(start)
		success := 1.0
		if err != nil {
			// Logged at debug level: the GPU reader logs a real failure
			// once, when it happens, rather than at every scrape.
			success = 0
			s.log.WithField(logfield.Collector, c.name).WithError(err).Debug("collector failed")
		}
		ch <- prometheus.MustNewConstMetric(s.durationDesc, prometheus.GaugeValue, d.Seconds(), c.name)
		ch <- prometheus.MustNewConstMetric(s.successDesc, prometheus.GaugeValue, success, c.name)
	}
}

// update runs one collector; a panic (a source's bug) fails that collector
// only, and is logged as an error.
func (s *Set) update(c named, ch chan<- prometheus.Metric) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			s.log.WithField(logfield.Collector, c.name).WithError(err).Error("collector panicked")
		}
	}()
	return c.c.update(ch)
}

var _ prometheus.Collector = (*Set)(nil)

// ErrNoData is wrapped by collectors that have nothing to report for an
// expected reason (no NVML on the machine, no telemetry read yet). It is
// logged at debug level and makes vramseal_collector_success 0.
var ErrNoData = errors.New("no data")

// gpuLabel is the `gpu` label of a device index.
func gpuLabel(i int) string { return strconv.Itoa(i) }

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
