package collector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/internal/nvml"
)

// GPUSource reads the telemetry of every GPU. Telemetry may block (a hung
// driver): the collector calls it from one background goroutine at a time,
// with a context that ends at the read timeout, and never from a scrape.
// When there is nothing to read for an expected reason (no NVML on the
// machine) it returns an error wrapping ErrNoData.
type GPUSource interface {
	Telemetry(ctx context.Context) ([]GPUTelemetry, error)
}

// GPUTelemetry is one GPU's state. Fields of queries the GPU does not
// support are left at zero with their Has flag false, and not exported.
type GPUTelemetry struct {
	Index         int
	UUID          string
	Name          string
	DriverVersion string
	// Up is false when the GPU could not be queried (lost, reset): only
	// vramseal_gpu_up (0) is exported for it then, and its
	// vramseal_gpu_info disappears.
	Up bool

	TotalBytes, UsedBytes, FreeBytes uint64
	ReservedBytes                    uint64
	HasReserved                      bool

	HasECC                       bool
	ECCCorrected, ECCUncorrected uint64

	HasRemappedRows                          bool
	RemappedCorrectable, RemappedUncorrected int
	RemapPending, RemapFailed                bool

	HasRetiredPages                    bool
	RetiredSingleBit, RetiredDoubleBit int

	// PCIBusID labels vramseal_gpu_info ("" where unknown).
	PCIBusID string
	// HasProcesses is whether Processes was read (the process metrics
	// are exported only then).
	HasProcesses bool
	Processes    []GPUProcess
	// MIG are the GPU's MIG instances when MIG is on.
	MIG []MIGInstance
	// XIDs counts the critical XID errors seen since the agent started,
	// by XID; NewXIDs those of this read only (one event each).
	XIDs, NewXIDs map[uint64]uint64
}

// MIGInstance is one GPU instance of a GPU in MIG mode.
type MIGInstance struct {
	GPUInstanceID         int
	UUID, Profile         string
	TotalBytes, UsedBytes uint64
}

// NVMLSource is the GPU source on real NVIDIA GPUs. It opens NVML at its
// first read, and again at later reads while NVML is missing, so a driver
// that loads after the agent starts is picked up. Without NVML it reports
// ErrNoData.
type NVMLSource struct {
	lib nvml.Library
	log logrus.FieldLogger

	mu     sync.Mutex
	client *nvml.Client
	xids   map[string]map[uint64]uint64 // by GPU UUID, since start
}

// NewNVMLSource returns a source reading lib (nvml.System() in the agent).
func NewNVMLSource(lib nvml.Library, log logrus.FieldLogger) *NVMLSource {
	if log == nil {
		log = logrus.StandardLogger()
	}
	return &NVMLSource{lib: lib, log: log}
}

// Telemetry implements GPUSource. NVML calls cannot be cancelled; ctx is
// checked before they start.
func (s *NVMLSource) Telemetry(ctx context.Context) ([]GPUTelemetry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if s.client == nil {
		c, err := nvml.Open(s.lib)
		if err != nil {
			if errors.Is(err, nvml.ErrLibraryNotFound) || errors.Is(err, nvml.ErrNotBuiltIn) {
				return nil, fmt.Errorf("%w: %w", ErrNoData, err)
			}
			return nil, err
		}
		s.client = c
	}
	ts, err := s.client.Telemetry()
	if err != nil {
		return nil, err
	}
	out := make([]GPUTelemetry, len(ts))
	for i, t := range ts {
		for _, e := range t.Errors {
			s.log.WithError(e).Debug("NVML query failed")
		}
		out[i] = GPUTelemetry{
			Index: t.Index, UUID: t.UUID, Name: t.Name, DriverVersion: t.DriverVersion, Up: t.Up,
			TotalBytes: t.Memory.Total, UsedBytes: t.Memory.Used, FreeBytes: t.Memory.Free,
			ReservedBytes: t.Memory.Reserved, HasReserved: t.Memory.HasReserved,
			HasECC: t.HasECC, ECCCorrected: t.ECCCorrected, ECCUncorrected: t.ECCUncorrected,
			HasRemappedRows:     t.HasRemappedRows,
			RemappedCorrectable: t.RemappedRows.Correctable, RemappedUncorrected: t.RemappedRows.Uncorrectable,
			RemapPending: t.RemappedRows.Pending, RemapFailed: t.RemappedRows.Failed,
			HasRetiredPages: t.HasRetiredPages, RetiredSingleBit: t.RetiredPagesSingleBit, RetiredDoubleBit: t.RetiredPagesDBE,
			PCIBusID: t.PCIBusID, HasProcesses: t.HasProcesses,
		}
		for _, p := range t.Processes {
			out[i].Processes = append(out[i].Processes, GPUProcess{PID: p.PID, UsedBytes: p.UsedBytes, HasUsed: p.HasUsed, GPUInstanceID: p.GPUInstanceID})
		}
		for _, m := range t.MIG {
			out[i].MIG = append(out[i].MIG, MIGInstance{GPUInstanceID: m.GPUInstanceID, UUID: m.UUID, Profile: m.Profile,
				TotalBytes: m.Memory.Total, UsedBytes: m.Memory.Used})
		}
	}
	s.addXIDs(out)
	return out, nil
}

// addXIDs drains the critical XID errors queued since the last read and
// puts them on their GPUs. Must be called with s.mu held.
func (s *NVMLSource) addXIDs(out []GPUTelemetry) {
	evs, _, err := s.client.XIDs()
	if err != nil {
		s.log.WithError(err).Debug("reading XID events failed")
	}
	if s.xids == nil {
		s.xids = map[string]map[uint64]uint64{}
	}
	byUUID := make(map[string]int, len(out))
	for i, t := range out {
		byUUID[t.UUID] = i
	}
	for _, ev := range evs {
		i, ok := byUUID[ev.UUID]
		if !ok {
			s.log.WithField("xid", ev.XID).WithField("uuid", ev.UUID).Warn("critical XID error on a GPU that is not in the telemetry")
			continue
		}
		if s.xids[ev.UUID] == nil {
			s.xids[ev.UUID] = map[uint64]uint64{}
		}
		s.xids[ev.UUID][ev.XID]++
		if out[i].NewXIDs == nil {
			out[i].NewXIDs = map[uint64]uint64{}
		}
		out[i].NewXIDs[ev.XID]++
	}
	for i, t := range out {
		if m := s.xids[t.UUID]; len(m) > 0 {
			out[i].XIDs = make(map[uint64]uint64, len(m))
			for k, v := range m {
				out[i].XIDs[k] = v
			}
		}
	}
}

// Close shuts NVML down if it was opened. It waits at most 5 seconds for a
// read in flight (a hung driver must not hang the agent's shutdown).
func (s *NVMLSource) Close() error {
	done := make(chan error, 1)
	go func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.client == nil {
			done <- nil
			return
		}
		done <- s.client.Close()
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(5 * time.Second):
		return errors.New("nvml: not shut down: a telemetry read is still running")
	}
}

var _ GPUSource = (*NVMLSource)(nil)

// gpuCollector serves the last telemetry read in the background.
type gpuCollector struct {
	src               GPUSource
	interval, timeout time.Duration
	log               logrus.FieldLogger
	now               func() time.Time

	mu       sync.Mutex
	data     []GPUTelemetry
	readAt   time.Time // end of the last successful read
	err      error     // the last read's error
	inflight bool
	started  time.Time // start of the read in flight
	lastLog  string

	info, up, total, used, free, reserved *prometheus.Desc
	ecc, remapped, remapPending           *prometheus.Desc
	remapFailed, retired                  *prometheus.Desc

	attr gpuAttribution
}

func newGPUCollector(o Options) *gpuCollector {
	gl := []string{"gpu", "uuid"}
	d := func(name, help string, extra ...string) *prometheus.Desc {
		return prometheus.NewDesc(Namespace+"_gpu_"+name, help, append(append([]string{}, gl...), extra...), nil)
	}
	return &gpuCollector{
		src: o.GPU, interval: o.GPUInterval, timeout: o.GPUTimeout, log: o.Logger, now: o.Now,
		attr: newGPUAttribution(o, d),
		info: prometheus.NewDesc(Namespace+"_gpu_info",
			"GPU identity, always 1, while the GPU answers (a lost GPU's series disappears). Simulated GPUs have name \"vramseal simulated GPU\" and driver_version \"simulated\"; pci_bus_id is empty where the driver does not report it.",
			[]string{"gpu", "uuid", "name", "driver_version", "pci_bus_id"}, nil),
		up:           d("up", "Whether the GPU answered its last telemetry read (1) or is lost or failing (0)."),
		total:        d("memory_total_bytes", "GPU memory in total, as the driver reports it."),
		used:         d("memory_used_bytes", "GPU memory in use by every process, as the driver reports it."),
		free:         d("memory_free_bytes", "GPU memory free, as the driver reports it."),
		reserved:     d("memory_reserved_bytes", "GPU memory the driver reserves for itself (where the driver reports it)."),
		ecc:          d("ecc_errors_total", "ECC errors over the GPU's lifetime (aggregate counters), by type corrected or uncorrected.", "type"),
		remapped:     d("remapped_rows", "Memory rows remapped, by the kind of error that caused it (correctable or uncorrectable; where supported).", "type"),
		remapPending: d("row_remap_pending", "Whether a row remap is pending and the GPU needs a reset (where supported)."),
		remapFailed:  d("row_remap_failed", "Whether a row remap has failed (where supported)."),
		retired:      d("retired_pages", "Memory pages retired, by cause single_bit_ecc or double_bit_ecc (where supported).", "cause"),
	}
}

func (g *gpuCollector) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{g.info, g.up, g.total, g.used, g.free, g.reserved, g.ecc, g.remapped, g.remapPending, g.remapFailed, g.retired} {
		ch <- d
	}
	g.attr.describe(ch)
}

func (g *gpuCollector) run(ctx context.Context) error {
	if g.src == nil {
		return nil
	}
	t := time.NewTicker(g.interval)
	defer t.Stop()
	for {
		_ = g.refresh(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// refresh starts a read unless one is in flight, and waits for it at most
// the timeout. A read that outlives the timeout stores its result when it
// ends; until then no other read starts (a hung driver holds one goroutine).
func (g *gpuCollector) refresh(ctx context.Context) error {
	if g.src == nil {
		return fmt.Errorf("%w: no GPU source", ErrNoData)
	}
	g.mu.Lock()
	if g.inflight {
		g.mu.Unlock()
		return fmt.Errorf("GPU telemetry read still running since %s", g.started.Format(time.RFC3339))
	}
	g.inflight, g.started = true, g.now()
	g.mu.Unlock()

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), g.timeout)
	done := make(chan error, 1)
	go func() {
		defer cancel()
		data, err := g.src.Telemetry(rctx)
		if err == nil {
			g.attr.observe(context.WithoutCancel(ctx), g.now(), data)
		}
		g.mu.Lock()
		g.inflight = false
		g.err = err
		if err == nil {
			g.data, g.readAt = data, g.now()
		}
		g.mu.Unlock()
		g.logResult(err)
		done <- err
	}()
	timer := time.NewTimer(g.timeout)
	defer timer.Stop()
	select {
	case err := <-done:
		return err
	case <-timer.C:
		return fmt.Errorf("GPU telemetry read timed out after %s", g.timeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// logResult logs a read's error when it differs from the last one, so a
// missing driver is not logged every interval.
func (g *gpuCollector) logResult(err error) {
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	g.mu.Lock()
	changed := msg != g.lastLog
	g.lastLog = msg
	g.mu.Unlock()
	switch {
	case !changed:
	case err == nil:
		g.log.Debug("GPU telemetry read")
	case errors.Is(err, ErrNoData):
		g.log.WithError(err).Debug("no GPU telemetry")
	default:
		g.log.WithError(err).Warn("reading GPU telemetry failed")
	}
}

// update serves the cache: data no older than two intervals plus the
// timeout; success is 0 when the last read failed or one has hung.
func (g *gpuCollector) update(ch chan<- prometheus.Metric) error {
	if g.src == nil {
		return fmt.Errorf("%w: no GPU source configured", ErrNoData)
	}
	g.mu.Lock()
	data, readAt, lastErr := g.data, g.readAt, g.err
	hung := g.inflight && g.now().Sub(g.started) > g.timeout
	started := g.started
	g.mu.Unlock()

	now := g.now()
	if !readAt.IsZero() && now.Sub(readAt) <= 2*g.interval+g.timeout {
		for _, t := range data {
			g.emit(ch, t)
		}
	}
	g.attr.collect(ch)
	switch {
	case hung:
		return fmt.Errorf("GPU telemetry read hung since %s (timeout %s)", started.Format(time.RFC3339), g.timeout)
	case lastErr != nil:
		return fmt.Errorf("GPU telemetry: %w", lastErr)
	case readAt.IsZero():
		return fmt.Errorf("%w: GPU telemetry not read yet", ErrNoData)
	case now.Sub(readAt) > 2*g.interval+g.timeout:
		return fmt.Errorf("GPU telemetry is stale (read at %s)", readAt.Format(time.RFC3339))
	}
	return nil
}

func (g *gpuCollector) emit(ch chan<- prometheus.Metric, t GPUTelemetry) {
	gpu := gpuLabel(t.Index)
	gauge := func(d *prometheus.Desc, v float64, extra ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{gpu, t.UUID}, extra...)...)
	}
	gauge(g.up, boolGauge(t.Up))
	if !t.Up {
		return // a lost GPU leaves vramseal_gpu_info: alerts key on its disappearance
	}
	ch <- prometheus.MustNewConstMetric(g.info, prometheus.GaugeValue, 1, gpu, t.UUID, t.Name, t.DriverVersion, t.PCIBusID)
	gauge(g.total, float64(t.TotalBytes))
	gauge(g.used, float64(t.UsedBytes))
	gauge(g.free, float64(t.FreeBytes))
	if t.HasReserved {
		gauge(g.reserved, float64(t.ReservedBytes))
	}
	if t.HasECC {
		ch <- prometheus.MustNewConstMetric(g.ecc, prometheus.CounterValue, float64(t.ECCCorrected), gpu, t.UUID, "corrected")
		ch <- prometheus.MustNewConstMetric(g.ecc, prometheus.CounterValue, float64(t.ECCUncorrected), gpu, t.UUID, "uncorrected")
	}
	if t.HasRemappedRows {
		gauge(g.remapped, float64(t.RemappedCorrectable), "correctable")
		gauge(g.remapped, float64(t.RemappedUncorrected), "uncorrectable")
		gauge(g.remapPending, boolGauge(t.RemapPending))
		gauge(g.remapFailed, boolGauge(t.RemapFailed))
	}
	if t.HasRetiredPages {
		gauge(g.retired, float64(t.RetiredSingleBit), "single_bit_ecc")
		gauge(g.retired, float64(t.RetiredDoubleBit), "double_bit_ecc")
	}
	g.attr.emit(ch, t)
}

// GPUSnapshot is the GPU telemetry the collector holds, as a scrape would
// serve it: the last successful read and what became of the reads since.
type GPUSnapshot struct {
	// GPUs is the last successful read (a copy; nil before the first).
	GPUs []GPUTelemetry
	// ReadAt is when that read ended (zero before the first).
	ReadAt time.Time
	// Fresh is whether a scrape serves GPUs now: a read no older than two
	// intervals plus the timeout.
	Fresh bool
	// Err is why the last read failed or hangs (nil when it succeeded).
	Err error
}

// GPUTelemetry returns the telemetry the background reads cached, without
// reading the GPUs (the status page shows the same numbers as /metrics).
// It is safe for concurrent use and cheap.
func (s *Set) GPUTelemetry() GPUSnapshot {
	g := s.gpu
	if g.src == nil {
		return GPUSnapshot{Err: fmt.Errorf("%w: no GPU source configured", ErrNoData)}
	}
	g.mu.Lock()
	snap := GPUSnapshot{GPUs: append([]GPUTelemetry(nil), g.data...), ReadAt: g.readAt, Err: g.err}
	hung := g.inflight && g.now().Sub(g.started) > g.timeout
	started := g.started
	g.mu.Unlock()
	snap.Fresh = !snap.ReadAt.IsZero() && g.now().Sub(snap.ReadAt) <= 2*g.interval+g.timeout
	if hung {
		snap.Err = fmt.Errorf("GPU telemetry read hung since %s (timeout %s)", started.Format(time.RFC3339), g.timeout)
	}
	return snap
}
