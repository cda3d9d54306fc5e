package collector_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/sealer"
)

// procSource serves telemetry that the test changes between reads.
type procSource struct {
	mu  sync.Mutex
	gpu []collector.GPUTelemetry
}

func (s *procSource) set(g ...collector.GPUTelemetry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gpu = g
}

func (s *procSource) Telemetry(context.Context) ([]collector.GPUTelemetry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]collector.GPUTelemetry(nil), s.gpu...), nil
}

// shardState is a SealState with fixed shards.
type shardState struct{ shards []sealer.ShardStatus }

func (s shardState) GPUs() []int                { return []int{0, 1} }
func (s shardState) List() []sealer.ShardStatus { return s.shards }

func gpuWith(index int, procs ...collector.GPUProcess) collector.GPUTelemetry {
	return collector.GPUTelemetry{Index: index, UUID: fmt.Sprintf("GPU-%d", index), Name: "NVIDIA H100 80GB HBM3", Up: true,
		TotalBytes: 80 << 30, HasProcesses: true, Processes: procs}
}

func proc(pid uint32, bytes uint64) collector.GPUProcess {
	return collector.GPUProcess{PID: pid, UsedBytes: bytes, HasUsed: true, GPUInstanceID: -1}
}

type procEnv struct {
	src *procSource
	set *collector.Set
	reg *prometheus.Registry
	rec *audit.Recorder
	now time.Time
	mu  sync.Mutex
}

func newProcEnv(t *testing.T, p collector.Processes) *procEnv {
	t.Helper()
	e := &procEnv{src: &procSource{}, rec: &audit.Recorder{}, now: time.Unix(1_800_000_000, 0)}
	// Shards on GPU 0: one leased by pid 20, one attached by pid 30. GPU 1 holds none.
	state := shardState{shards: []sealer.ShardStatus{
		{Seal: sealer.Seal{ShardID: "a", GPUDevice: 0}, Leases: []audit.Caller{{UID: 1000, PID: 20}}, Origin: sealer.OriginSealed},
		{Seal: sealer.Seal{ShardID: "b", GPUDevice: 0}, Origin: sealer.OriginAttached, Owner: &audit.Caller{UID: 1000, PID: 30}},
	}}
	if p.Name == nil {
		visible := map[int64]string{10: "vramseal-agent", 20: "vllm", 30: "python3", 40: "miner", 41: "miner", 42: "miner", 43: "miner"}
		p.Name = func(pid int64) (string, bool) { n, ok := visible[pid]; return n, ok }
	}
	set, err := collector.New(collector.Options{Device: "cuda", GPU: e.src, Sealer: state, Processes: p, Emitter: e.rec,
		Logger: quietLogger(), Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.set, e.reg = set, prometheus.NewRegistry()
	e.reg.MustRegister(set)
	return e
}

func (e *procEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *procEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
}

func (e *procEnv) read(t *testing.T, g ...collector.GPUTelemetry) string {
	t.Helper()
	e.src.set(g...)
	if err := e.set.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	return scrape(t, e.reg)
}

func TestProcessAttribution(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, HostPIDNamespace: true})
	body := e.read(t,
		gpuWith(0, proc(10, 4<<30), proc(20, 1<<30), proc(30, 2<<30), proc(40, 3<<30), proc(50, 5)),
		gpuWith(1))
	for _, want := range []string{
		`vramseal_gpu_processes{class="agent",gpu="0",uuid="GPU-0"} 1`,
		`vramseal_gpu_processes{class="consumer",gpu="0",uuid="GPU-0"} 1`,
		`vramseal_gpu_processes{class="owner",gpu="0",uuid="GPU-0"} 1`,
		`vramseal_gpu_processes{class="foreign",gpu="0",uuid="GPU-0"} 1`,
		`vramseal_gpu_processes{class="unknown",gpu="0",uuid="GPU-0"} 1`, // pid 50 is not visible here
		`vramseal_gpu_process_memory_bytes{class="agent",gpu="0",uuid="GPU-0"} 4.294967296e+09`,
		`vramseal_gpu_process_memory_bytes{class="foreign",gpu="0",uuid="GPU-0"} 3.221225472e+09`,
		`vramseal_gpu_process_memory_bytes{class="unknown",gpu="0",uuid="GPU-0"} 5`,
		`vramseal_gpu_processes{class="foreign",gpu="1",uuid="GPU-1"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %s in\n%s", want, strings.Join(lines(body, "vramseal_gpu_process"), "\n"))
		}
	}
	if got := lines(body, "vramseal_gpu_process_used_bytes"); len(got) != 0 {
		t.Errorf("per-process series without metrics.process_labels: %q", got)
	}
	if got := lines(body, "vramseal_gpu_process_series_dropped_total"); len(got) != 0 {
		t.Errorf("dropped counter without metrics.process_labels: %q", got)
	}
}

// Outside the host's pid namespace NVML's host pids cannot be matched:
// every process is unknown, none foreign (and no event).
func TestProcessAttributionWithoutHostPID(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, ForeignEvents: true})
	body := e.read(t, gpuWith(0, proc(10, 1), proc(20, 1), proc(40, 1)))
	for _, want := range []string{
		`vramseal_gpu_processes{class="unknown",gpu="0",uuid="GPU-0"} 3`,
		`vramseal_gpu_processes{class="foreign",gpu="0",uuid="GPU-0"} 0`,
		`vramseal_gpu_processes{class="agent",gpu="0",uuid="GPU-0"} 0`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %s in\n%s", want, strings.Join(lines(body, "vramseal_gpu_processes"), "\n"))
		}
	}
	if evs := e.rec.Named(audit.NameGPUForeignProcess); len(evs) != 0 {
		t.Errorf("foreign-process events without host pids: %v", evs)
	}
}

// A consumer whose pid is unknown (another pid namespace) might be any
// unmatched process: those are unknown, not foreign.
func TestProcessAttributionUnmatchableConsumer(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, HostPIDNamespace: true})
	e.set = nil
	state := shardState{shards: []sealer.ShardStatus{{Seal: sealer.Seal{ShardID: "a"}, Leases: []audit.Caller{{PID: -1}}}}}
	set, err := collector.New(collector.Options{Device: "cuda", GPU: e.src, Sealer: state, Logger: quietLogger(),
		Processes: collector.Processes{AgentPID: 10, HostPIDNamespace: true, Name: func(int64) (string, bool) { return "x", true }}})
	if err != nil {
		t.Fatal(err)
	}
	e.set, e.reg = set, prometheus.NewRegistry()
	e.reg.MustRegister(set)
	body := e.read(t, gpuWith(0, proc(10, 1), proc(40, 1)))
	if !strings.Contains(body, `vramseal_gpu_processes{class="unknown",gpu="0",uuid="GPU-0"} 1`+"\n") ||
		!strings.Contains(body, `vramseal_gpu_processes{class="agent",gpu="0",uuid="GPU-0"} 1`+"\n") {
		t.Errorf("with an unmatchable consumer:\n%s", strings.Join(lines(body, "vramseal_gpu_processes"), "\n"))
	}
}

func TestProcessLabelsBounded(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, HostPIDNamespace: true, Labels: true, LabelLimit: 2})
	gpus := []collector.GPUTelemetry{gpuWith(0, proc(10, 4<<30), proc(20, 1<<30), proc(40, 3<<30)), gpuWith(1, proc(41, 5), proc(42, 6))}
	body := e.read(t, gpus...)
	got := lines(body, "vramseal_gpu_process_used_bytes{")
	want := []string{
		`vramseal_gpu_process_used_bytes{class="agent",gpu="0",name="vramseal-agent",pid="10",uuid="GPU-0"} 4.294967296e+09`,
		`vramseal_gpu_process_used_bytes{class="foreign",gpu="0",name="miner",pid="40",uuid="GPU-0"} 3.221225472e+09`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("per-process series:\n%s\nwant the two largest:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(body, "vramseal_gpu_process_series_dropped_total 3\n") {
		t.Errorf("dropped: %q", lines(body, "vramseal_gpu_process_series_dropped_total"))
	}
	body = e.read(t, gpus...)
	if !strings.Contains(body, "vramseal_gpu_process_series_dropped_total 6\n") {
		t.Errorf("dropped after a second read: %q", lines(body, "vramseal_gpu_process_series_dropped_total"))
	}
}

func TestForeignProcessEventRateLimited(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, HostPIDNamespace: true, ForeignEvents: true, ForeignEventInterval: time.Minute})
	base := []collector.GPUProcess{proc(10, 1), proc(20, 1)}
	with := func(pids ...uint32) collector.GPUTelemetry {
		ps := append([]collector.GPUProcess(nil), base...)
		for _, p := range pids {
			ps = append(ps, proc(p, 7))
		}
		return gpuWith(0, ps...)
	}
	events := func() []audit.GPUForeignProcess {
		var out []audit.GPUForeignProcess
		for _, ev := range e.rec.Named(audit.NameGPUForeignProcess) {
			out = append(out, ev.(audit.GPUForeignProcess))
		}
		return out
	}
	e.read(t, with(), gpuWith(1, proc(43, 1))) // GPU 1 holds no sealed shard: never an event
	e.read(t, with(40), gpuWith(1, proc(43, 1)))
	if evs := events(); len(evs) != 1 || evs[0].PID != 40 || evs[0].Executable != "miner" || evs[0].GPUDevice != 0 ||
		evs[0].UsedBytes != 7 || evs[0].SealedShards != 2 || evs[0].Suppressed != 0 {
		t.Fatalf("after pid 40 appeared: %+v", evs)
	}
	e.advance(10 * time.Second)
	e.read(t, with(40)) // still there: not a new appearance
	e.advance(10 * time.Second)
	e.read(t, with(40, 41)) // within the minute: suppressed
	e.read(t, with(40, 41))
	if evs := events(); len(evs) != 1 {
		t.Fatalf("inside the interval: %d events", len(evs))
	}
	e.advance(time.Minute)
	e.read(t, with(40, 41, 42))
	evs := events()
	if len(evs) != 2 || evs[1].PID != 42 || evs[1].Suppressed != 1 {
		t.Fatalf("after the interval: %+v", evs)
	}
	if evs[1].Severity() != audit.SeverityWarn {
		t.Errorf("severity %v", evs[1].Severity())
	}
}

func TestForeignProcessEventsOffByDefault(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, HostPIDNamespace: true})
	e.read(t, gpuWith(0, proc(40, 1)))
	if evs := e.rec.Named(audit.NameGPUForeignProcess); len(evs) != 0 {
		t.Fatalf("events while off: %v", evs)
	}
}

func TestXIDAndMIGSeries(t *testing.T) {
	e := newProcEnv(t, collector.Processes{AgentPID: 10, HostPIDNamespace: true})
	g := gpuWith(0)
	g.PCIBusID = "00000000:3B:00.0"
	g.XIDs, g.NewXIDs = map[uint64]uint64{79: 2, 48: 1}, map[uint64]uint64{79: 1}
	g.MIG = []collector.MIGInstance{{GPUInstanceID: 7, UUID: "MIG-a", Profile: "1g.10gb", TotalBytes: 10 << 30, UsedBytes: 1 << 30}}
	body := e.read(t, g)
	for _, want := range []string{
		`vramseal_gpu_xid_errors_total{gpu="0",uuid="GPU-0",xid="48"} 1`,
		`vramseal_gpu_xid_errors_total{gpu="0",uuid="GPU-0",xid="79"} 2`,
		`vramseal_gpu_mig_instance_info{gpu="0",gpu_instance_id="7",mig_uuid="MIG-a",profile="1g.10gb",uuid="GPU-0"} 1`,
		`vramseal_gpu_mig_memory_total_bytes{gpu="0",gpu_instance_id="7",uuid="GPU-0"} 1.073741824e+10`,
		`vramseal_gpu_mig_memory_used_bytes{gpu="0",gpu_instance_id="7",uuid="GPU-0"} 1.073741824e+09`,
		`vramseal_gpu_info{driver_version="",gpu="0",name="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:3B:00.0",uuid="GPU-0"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("missing %s", want)
		}
	}
	evs := e.rec.Named(audit.NameGPUXID)
	if len(evs) != 1 {
		t.Fatalf("xid events %v", evs)
	}
	if x := evs[0].(audit.GPUXID); x.XID != 79 || x.Count != 1 || x.Header.GPUUUID != "GPU-0" || x.Header.Cause.Kind != audit.CauseTelemetry || x.Severity() != audit.SeverityError {
		t.Errorf("xid event %+v", x)
	}
}

func TestProcNameAndHostPIDNamespace(t *testing.T) {
	root := t.TempDir()
	write := func(pid, comm string) {
		if err := os.MkdirAll(filepath.Join(root, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "comm"), []byte(comm), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if collector.HostPIDNamespace(root) {
		t.Error("no pid 2: host namespace")
	}
	write("2", "bash\n") // a container's pid 2 is no kernel thread
	if collector.HostPIDNamespace(root) {
		t.Error("pid 2 is bash: host namespace")
	}
	write("2", "kthreadd\n")
	if !collector.HostPIDNamespace(root) {
		t.Error("pid 2 is kthreadd: not the host namespace")
	}
	write("42", "python3\n")
	name := collector.ProcName(root)
	if n, ok := name(42); !ok || n != "python3" {
		t.Errorf("ProcName(42) = %q, %v", n, ok)
	}
	if _, ok := name(43); ok {
		t.Error("a missing process is visible")
	}
}
