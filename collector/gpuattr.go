package collector

import (
	"context"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
)

// gpuAttribution turns each telemetry read's processes, MIG instances and
// XIDs into series and events. observe runs in the background read;
// emit and collect at scrapes.
type gpuAttribution struct {
	opts     Processes
	sealer   SealState
	emitter  audit.Emitter
	workerID string
	limit    int

	processes, processBytes, processUsed *prometheus.Desc
	dropped, migInfo, migTotal, migUsed  *prometheus.Desc
	xid, pod                             *prometheus.Desc
	podSrc                               PodSource
	log                                  logrus.FieldLogger

	mu       sync.Mutex
	per      map[int]gpuProcesses
	labelled map[int][]attributed
	dropTot  uint64
	limiter  *foreignLimiter
	pods     map[int][]podKey
	podErr   string
}

func newGPUAttribution(o Options, d func(name, help string, extra ...string) *prometheus.Desc) gpuAttribution {
	limit := o.Processes.LabelLimit
	if limit <= 0 {
		limit = 100
	}
	return gpuAttribution{
		opts: o.Processes, sealer: o.Sealer, emitter: o.Emitter, workerID: o.WorkerID, limit: limit,
		podSrc: o.Pods, log: o.Logger,
		pod: d("pod_info", "A container the GPU (or a MIG device of it) is allocated to, always 1, from the kubelet's pod-resources API (with kubernetes.pod_resources_socket).",
			"namespace", "pod", "container"),
		limiter: newForeignLimiter(o.Processes.ForeignEventInterval),
		processes: d("processes", "Processes on the GPU (NVML's compute and graphics processes), by class: "+
			"agent (this agent), consumer (a lease through the consumer socket), owner (attached memory), "+
			"foreign (none of these), unknown (cannot be matched: the agent runs outside the host's pid namespace, "+
			"cannot see the process, or a consumer's pid is unknown).", "class"),
		processBytes: d("process_memory_bytes", "GPU memory held by the processes on the GPU, by class (as for vramseal_gpu_processes; memory NVML does not report counts as 0).", "class"),
		processUsed: d("process_used_bytes", "GPU memory held by one process, with its host pid and name (only with metrics.process_labels; at most metrics.process_label_limit series, the largest first).",
			"class", "pid", "name"),
		dropped: prometheus.NewDesc(Namespace+"_gpu_process_series_dropped_total",
			"Per-process series left out by metrics.process_label_limit, summed over the telemetry reads.", nil, nil),
		migInfo: d("mig_instance_info", "A MIG GPU instance of the GPU, always 1, with its profile and MIG device UUID (where MIG is on).",
			"gpu_instance_id", "profile", "mig_uuid"),
		migTotal: d("mig_memory_total_bytes", "Memory of the MIG GPU instance.", "gpu_instance_id"),
		migUsed:  d("mig_memory_used_bytes", "Memory in use in the MIG GPU instance.", "gpu_instance_id"),
		xid:      d("xid_errors_total", "Critical XID errors NVML reported since the agent started, by XID (only XIDs seen have a series).", "xid"),
	}
}

func (a *gpuAttribution) describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{a.processes, a.processBytes, a.processUsed, a.dropped, a.migInfo, a.migTotal, a.migUsed, a.xid, a.pod} {
		ch <- d
	}
}

// observe attributes a read's processes and emits its events: one
// vramseal.gpu.xid per GPU and XID that came, and the rate-limited
// vramseal.gpu.foreign_process when enabled.
func (a *gpuAttribution) observe(ctx context.Context, now time.Time, data []GPUTelemetry) {
	var m *matcher
	per := map[int]gpuProcesses{}
	var xids []audit.GPUXID
	for _, t := range data {
		for _, x := range sortedKeys(t.NewXIDs) {
			xids = append(xids, audit.GPUXID{Header: gpuEventHeader(now, a.workerID, t.UUID), GPUDevice: t.Index, XID: x, Count: t.NewXIDs[x]})
		}
		if !t.Up || !t.HasProcesses {
			continue
		}
		if m == nil {
			m = newMatcher(a.opts, a.shards())
		}
		per[t.Index] = m.attribute(t.Processes)
	}
	emitAll(ctx, a.emitter, xids)
	pods := a.readPods(ctx, data)

	var keep map[int][]attributed
	dropped := 0
	if a.opts.Labels {
		keep, dropped = labelled(per, a.limit)
	}
	a.mu.Lock()
	a.per, a.labelled, a.pods = per, keep, pods
	a.dropTot += uint64(dropped)
	var foreign []audit.GPUForeignProcess
	if a.opts.ForeignEvents && m != nil {
		for _, t := range data {
			if g, ok := per[t.Index]; ok {
				foreign = append(foreign, a.limiter.observe(now, t.Index, t.UUID, a.workerID, g, m.sealedPerGPU[t.Index])...)
			}
		}
	}
	a.mu.Unlock()
	emitAll(ctx, a.emitter, foreign)
}

func (a *gpuAttribution) shards() []sealer.ShardStatus {
	if a.sealer == nil {
		return nil
	}
	return a.sealer.List()
}

// readPods asks the pod source, when there is one, and matches its pods to
// the read's GPUs. A failure leaves no pod series and is logged when it
// changes.
func (a *gpuAttribution) readPods(ctx context.Context, data []GPUTelemetry) map[int][]podKey {
	if a.podSrc == nil {
		return nil
	}
	pods, err := a.podSrc.GPUPods(ctx)
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	a.mu.Lock()
	changed := msg != a.podErr
	a.podErr = msg
	a.mu.Unlock()
	if err != nil {
		if changed {
			a.log.WithError(err).Warn("reading the pods of the GPUs failed")
		}
		return nil
	}
	return podsByGPU(pods, data)
}

// emit writes one GPU's process, MIG, XID and pod series.
func (a *gpuAttribution) emit(ch chan<- prometheus.Metric, t GPUTelemetry) {
	gpu := gpuLabel(t.Index)
	a.mu.Lock()
	g, ok := a.per[t.Index]
	procs := a.labelled[t.Index]
	pods := a.pods[t.Index]
	a.mu.Unlock()
	for _, p := range pods {
		ch <- prometheus.MustNewConstMetric(a.pod, prometheus.GaugeValue, 1, gpu, t.UUID, p.namespace, p.pod, p.container)
	}
	if ok {
		for _, c := range processClasses {
			ch <- prometheus.MustNewConstMetric(a.processes, prometheus.GaugeValue, float64(g.count[c]), gpu, t.UUID, c)
			ch <- prometheus.MustNewConstMetric(a.processBytes, prometheus.GaugeValue, float64(g.bytes[c]), gpu, t.UUID, c)
		}
		for _, p := range procs {
			ch <- prometheus.MustNewConstMetric(a.processUsed, prometheus.GaugeValue, float64(p.UsedBytes), gpu, t.UUID,
				p.class, strconv.FormatUint(uint64(p.PID), 10), p.name)
		}
	}
	for _, m := range t.MIG {
		gi := strconv.Itoa(m.GPUInstanceID)
		ch <- prometheus.MustNewConstMetric(a.migInfo, prometheus.GaugeValue, 1, gpu, t.UUID, gi, m.Profile, m.UUID)
		ch <- prometheus.MustNewConstMetric(a.migTotal, prometheus.GaugeValue, float64(m.TotalBytes), gpu, t.UUID, gi)
		ch <- prometheus.MustNewConstMetric(a.migUsed, prometheus.GaugeValue, float64(m.UsedBytes), gpu, t.UUID, gi)
	}
	for _, x := range sortedKeys(t.XIDs) {
		ch <- prometheus.MustNewConstMetric(a.xid, prometheus.CounterValue, float64(t.XIDs[x]), gpu, t.UUID, strconv.FormatUint(x, 10))
	}
}

// collect writes the series that are not per GPU.
func (a *gpuAttribution) collect(ch chan<- prometheus.Metric) {
	if !a.opts.Labels {
		return
	}
	a.mu.Lock()
	n := a.dropTot
	a.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(a.dropped, prometheus.CounterValue, float64(n))
}

func sortedKeys(m map[uint64]uint64) []uint64 {
	keys := make([]uint64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
