package collector

// Who uses each GPU: the processes NVML reports, attributed to the agent,
// its consumers and attach owners, or others.

import (
	"cmp"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
)

// GPUProcess is a process on a GPU. PID is a host pid (NVML reports host
// pids whatever pid namespace the agent runs in).
type GPUProcess struct {
	PID uint32
	// UsedBytes is the GPU memory it holds; HasUsed is false where the
	// driver does not report it.
	UsedBytes uint64
	HasUsed   bool
	// GPUInstanceID is its MIG GPU instance (-1: none).
	GPUInstanceID int
}

// Process classes (the class label).
const (
	ClassAgent    = "agent"    // this agent
	ClassConsumer = "consumer" // holds a lease on a shard (consumer socket)
	ClassOwner    = "owner"    // owns attached memory
	ClassForeign  = "foreign"  // none of these, and the agent could have matched it
	ClassUnknown  = "unknown"  // cannot be matched: outside the agent's pid namespace
)

// processClasses is every class, in label order.
var processClasses = []string{ClassAgent, ClassConsumer, ClassOwner, ClassForeign, ClassUnknown}

// Processes is how the agent tells processes on its GPUs apart.
type Processes struct {
	// AgentPID is the agent's own pid as NVML sees it (os.Getpid in the
	// host pid namespace).
	AgentPID int64
	// HostPIDNamespace is whether the agent runs in the host's pid
	// namespace (hostPID: true in Kubernetes, or a host service). Without
	// it NVML's host pids cannot be matched with consumers' pids, and
	// every process but those matched is unknown.
	HostPIDNamespace bool
	// Name returns a visible process's name (/proc/PID/comm) and whether
	// the process is visible at all (nil: ProcName with /proc).
	Name func(pid int64) (string, bool)
	// Labels exports per-process series (pid, name), at most LabelLimit
	// (100 when 0) per scrape.
	Labels     bool
	LabelLimit int
	// ForeignEvents emits audit.GPUForeignProcess through Emitter when a
	// foreign process appears on a GPU that holds sealed shards, at most
	// once per GPU per ForeignEventInterval (10m when 0).
	ForeignEvents        bool
	ForeignEventInterval time.Duration
}

// ProcName reads a process's name under root (normally "/proc"): the
// second value is false when the process is not visible from here.
func ProcName(root string) func(pid int64) (string, bool) {
	return func(pid int64) (string, bool) {
		b, err := os.ReadFile(filepath.Join(root, strconv.FormatInt(pid, 10), "comm"))
		if err != nil {
			return "", false
		}
		return strings.TrimSpace(string(b)), true
	}
}

// HostPIDNamespace reports whether the /proc at root is the host's pid
// namespace: only there is pid 2 the kernel's kthreadd (kernel threads are
// not visible in a container's pid namespace).
func HostPIDNamespace(root string) bool {
	b, err := os.ReadFile(filepath.Join(root, "2", "comm"))
	return err == nil && strings.TrimSpace(string(b)) == "kthreadd"
}

// attributed is one process with its class (and name, when labelled).
type attributed struct {
	GPUProcess
	class, name string
}

// gpuProcesses is one GPU's processes, attributed.
type gpuProcesses struct {
	count, bytes map[string]uint64
	procs        []attributed
}

// matcher holds the pids of the agent's consumers and owners.
type matcher struct {
	agent            int64
	consumers        map[int64]bool
	owners           map[int64]bool
	unmatchablePeers bool // a consumer or owner whose pid is unknown (another pid namespace)
	hostPID          bool
	name             func(int64) (string, bool)
	sealedPerGPU     map[int]int
}

func newMatcher(p Processes, shards []sealer.ShardStatus) *matcher {
	m := &matcher{agent: p.AgentPID, consumers: map[int64]bool{}, owners: map[int64]bool{},
		hostPID: p.HostPIDNamespace, name: p.Name, sealedPerGPU: map[int]int{}}
	if m.name == nil {
		m.name = ProcName("/proc")
	}
	for _, sh := range shards {
		m.sealedPerGPU[sh.Seal.GPUDevice]++
		for _, l := range sh.Leases {
			if l.PID <= 0 {
				m.unmatchablePeers = true
				continue
			}
			m.consumers[l.PID] = true
		}
		if sh.Owner != nil {
			if sh.Owner.PID <= 0 {
				m.unmatchablePeers = true
				continue
			}
			m.owners[sh.Owner.PID] = true
		}
	}
	return m
}

// classify returns a process's class and, when visible, its name.
func (m *matcher) classify(pid int64) (class, name string) {
	name, visible := "", false
	if m.hostPID {
		name, visible = m.name(pid)
	}
	switch {
	case pid == m.agent && m.hostPID:
		return ClassAgent, name
	case m.owners[pid] && m.hostPID:
		return ClassOwner, name
	case m.consumers[pid] && m.hostPID:
		return ClassConsumer, name
	case !m.hostPID || !visible || m.unmatchablePeers:
		// NVML's host pids mean nothing in another pid namespace, a
		// process we cannot see cannot be told, and a consumer whose pid
		// is unknown might be this one: never call these foreign.
		return ClassUnknown, name
	}
	return ClassForeign, name
}

func (m *matcher) attribute(procs []GPUProcess) gpuProcesses {
	out := gpuProcesses{count: map[string]uint64{}, bytes: map[string]uint64{}, procs: make([]attributed, 0, len(procs))}
	for _, p := range procs {
		class, name := m.classify(int64(p.PID))
		out.count[class]++
		out.bytes[class] += p.UsedBytes
		out.procs = append(out.procs, attributed{GPUProcess: p, class: class, name: name})
	}
	return out
}

// labelled picks the per-process series to export: the largest holders
// first, at most limit in all; it returns them and how many were left out.
func labelled(per map[int]gpuProcesses, limit int) (keep map[int][]attributed, dropped int) {
	type entry struct {
		gpu int
		p   attributed
	}
	var all []entry
	for gpu, g := range per {
		for _, p := range g.procs {
			all = append(all, entry{gpu, p})
		}
	}
	slices.SortFunc(all, func(a, b entry) int {
		if c := cmp.Compare(b.p.UsedBytes, a.p.UsedBytes); c != 0 {
			return c
		}
		if c := cmp.Compare(a.gpu, b.gpu); c != 0 {
			return c
		}
		return cmp.Compare(a.p.PID, b.p.PID)
	})
	keep = map[int][]attributed{}
	for i, e := range all {
		if i >= limit {
			return keep, len(all) - limit
		}
		keep[e.gpu] = append(keep[e.gpu], e.p)
	}
	return keep, 0
}

// foreignLimiter rate-limits vramseal.gpu.foreign_process per GPU. A
// process is reported when it appears (it was not foreign on that GPU at
// the previous read); an appearance inside the interval after the GPU's
// last event is counted and reported with the next event.
type foreignLimiter struct {
	interval   time.Duration
	last       map[int]time.Time
	suppressed map[int]int
	seen       map[int]map[uint32]bool
}

func newForeignLimiter(interval time.Duration) *foreignLimiter {
	if interval <= 0 {
		interval = 10 * time.Minute
	}
	return &foreignLimiter{interval: interval, last: map[int]time.Time{}, suppressed: map[int]int{}, seen: map[int]map[uint32]bool{}}
}

// observe records a GPU's foreign processes at now and returns the events
// to emit (at most one).
func (l *foreignLimiter) observe(now time.Time, gpu int, uuid string, workerID string, g gpuProcesses, sealed int) []audit.GPUForeignProcess {
	prev := l.seen[gpu]
	cur := map[uint32]bool{}
	var fresh []attributed
	for _, p := range g.procs {
		if p.class != ClassForeign {
			continue
		}
		cur[p.PID] = true
		if !prev[p.PID] {
			fresh = append(fresh, p)
		}
	}
	l.seen[gpu] = cur
	if sealed == 0 || len(fresh) == 0 {
		return nil
	}
	if last, ok := l.last[gpu]; ok && now.Sub(last) < l.interval {
		l.suppressed[gpu] += len(fresh)
		return nil
	}
	p := fresh[0]
	used := int64(-1)
	if p.HasUsed {
		used = int64(min(p.UsedBytes, 1<<63-1))
	}
	ev := audit.GPUForeignProcess{Header: gpuEventHeader(now, workerID, uuid), GPUDevice: gpu,
		PID: int64(p.PID), Executable: p.name, UsedBytes: used, SealedShards: sealed,
		Suppressed: l.suppressed[gpu] + len(fresh) - 1}
	l.last[gpu], l.suppressed[gpu] = now, 0
	return []audit.GPUForeignProcess{ev}
}

// gpuEventHeader is the header of an event the telemetry read found on a
// GPU.
func gpuEventHeader(now time.Time, workerID, uuid string) audit.Header {
	h := audit.NewHeader(now, workerID)
	h.Cause, h.GPUUUID = audit.Cause{Kind: audit.CauseTelemetry}, uuid
	return h
}

// emitAll hands events to the emitter (never blocking the read on them
// failing: Emit itself counts failures).
func emitAll[E audit.Event](ctx context.Context, em audit.Emitter, evs []E) {
	if em == nil {
		return
	}
	for _, ev := range evs {
		em.Emit(ctx, ev)
	}
}
