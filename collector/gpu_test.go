package collector_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/nvml"
)

func TestGPUSimulatedTelemetry(t *testing.T) {
	e := newEnv(t, envOpts{})
	e.devs[1].AddECC(5, 2)
	e.refresh(t)
	want := `
# HELP vramseal_gpu_ecc_errors_total ECC errors over the GPU's lifetime (aggregate counters), by type corrected or uncorrected.
# TYPE vramseal_gpu_ecc_errors_total counter
vramseal_gpu_ecc_errors_total{gpu="0",type="corrected",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 0
vramseal_gpu_ecc_errors_total{gpu="0",type="uncorrected",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 0
vramseal_gpu_ecc_errors_total{gpu="1",type="corrected",uuid="GPU-SIM-00000001-0000-4000-8000-000000000001"} 5
vramseal_gpu_ecc_errors_total{gpu="1",type="uncorrected",uuid="GPU-SIM-00000001-0000-4000-8000-000000000001"} 2
# HELP vramseal_gpu_info GPU identity, always 1, while the GPU answers (a lost GPU's series disappears). Simulated GPUs have name "vramseal simulated GPU" and driver_version "simulated"; pci_bus_id is empty where the driver does not report it.
# TYPE vramseal_gpu_info gauge
vramseal_gpu_info{driver_version="simulated",gpu="0",name="vramseal simulated GPU",pci_bus_id="",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 1
vramseal_gpu_info{driver_version="simulated",gpu="1",name="vramseal simulated GPU",pci_bus_id="",uuid="GPU-SIM-00000001-0000-4000-8000-000000000001"} 1
# HELP vramseal_gpu_memory_total_bytes GPU memory in total, as the driver reports it.
# TYPE vramseal_gpu_memory_total_bytes gauge
vramseal_gpu_memory_total_bytes{gpu="0",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 1.073741824e+09
vramseal_gpu_memory_total_bytes{gpu="1",uuid="GPU-SIM-00000001-0000-4000-8000-000000000001"} 1.073741824e+09
# HELP vramseal_collector_success Whether the collector's last scrape succeeded (1) or not (0).
# TYPE vramseal_collector_success gauge
vramseal_collector_success{collector="audit"} 1
vramseal_collector_success{collector="control"} 1
vramseal_collector_success{collector="gpu"} 1
vramseal_collector_success{collector="info"} 1
vramseal_collector_success{collector="policy"} 1
vramseal_collector_success{collector="seal"} 1
`
	names := []string{"vramseal_gpu_ecc_errors_total", "vramseal_gpu_info", "vramseal_gpu_memory_total_bytes", "vramseal_collector_success"}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	// A lost GPU reports up 0, and its info and memory disappear.
	e.devs[1].SetLost(true)
	e.refresh(t)
	body := scrape(t, e.reg)
	if !strings.Contains(body, `vramseal_gpu_up{gpu="1",uuid="GPU-SIM-00000001-0000-4000-8000-000000000001"} 0`+"\n") ||
		!strings.Contains(body, `vramseal_gpu_up{gpu="0",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 1`+"\n") {
		t.Errorf("gpu_up after GPU 1 was lost:\n%s", strings.Join(lines(body, "vramseal_gpu_up"), "\n"))
	}
	for _, prefix := range []string{`vramseal_gpu_memory_free_bytes{gpu="1"`, `vramseal_gpu_info{driver_version="simulated",gpu="1"`} {
		if got := lines(body, prefix); len(got) != 0 {
			t.Errorf("lost GPU still reports %q", got)
		}
	}
	if got := lines(body, `vramseal_gpu_info{driver_version="simulated",gpu="0"`); len(got) != 1 {
		t.Errorf("GPU 0's info: %q", got)
	}
}

// blockingSource is a GPU source whose reads hang until released.
type blockingSource struct {
	calls   atomic.Int32
	release chan struct{}
}

func (b *blockingSource) Telemetry(ctx context.Context) ([]collector.GPUTelemetry, error) {
	b.calls.Add(1)
	<-b.release
	return []collector.GPUTelemetry{{Index: 0, UUID: "GPU-x", Name: "n", DriverVersion: "d", Up: true, TotalBytes: 100, FreeBytes: 100}}, nil
}

func TestGPUHungDriverNeverHangsAScrape(t *testing.T) {
	src := &blockingSource{release: make(chan struct{})}
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) {
		o.GPU = src
		o.GPUTimeout = 50 * time.Millisecond
		o.Now = time.Now
	}})
	start := time.Now()
	if err := e.set.Refresh(context.Background()); err == nil || !strings.Contains(err.Error(), "timed out") {
		t.Fatalf("Refresh of a hung source: %v", err)
	}
	time.Sleep(60 * time.Millisecond) // past the timeout: the read counts as hung
	done := make(chan string)
	go func() { done <- scrape(t, e.reg) }()
	var body string
	select {
	case body = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a scrape hung behind a hung GPU read")
	}
	if !strings.Contains(body, `vramseal_collector_success{collector="gpu"} 0`+"\n") {
		t.Errorf("gpu collector success is not 0 while the read hangs:\n%s", strings.Join(lines(body, "vramseal_collector_success"), "\n"))
	}
	// While the read hangs no second read starts.
	if err := e.set.Refresh(context.Background()); err == nil {
		t.Error("a second Refresh started while one hangs")
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("source called %d times, want 1", n)
	}
	// When the driver answers, the data appears and success is 1 again.
	close(src.release)
	deadline := time.Now().Add(5 * time.Second)
	for {
		body = scrape(t, e.reg)
		if strings.Contains(body, `vramseal_collector_success{collector="gpu"} 1`+"\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gpu collector did not recover:\n%s", strings.Join(lines(body, "vramseal_collector_success"), "\n"))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(body, `vramseal_gpu_memory_total_bytes{gpu="0",uuid="GPU-x"} 100`+"\n") {
		t.Error("the late read's data is not served")
	}
	t.Logf("hung-source test took %s", time.Since(start))
}

func TestGPURunReadsInBackground(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.GPUInterval = 20 * time.Millisecond; o.Now = time.Now }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); _ = e.set.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	e.seal(t, "bg", 0, 4096)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(scrape(t, e.reg), `vramseal_gpu_memory_used_bytes{gpu="0",uuid="GPU-SIM-00000000-0000-4000-8000-000000000000"} 4096`+"\n") {
		if time.Now().After(deadline) {
			t.Fatal("background reads did not pick up the sealed shard's memory")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestGPUNotReadYetIsNoData(t *testing.T) {
	e := newEnv(t, envOpts{})
	body := scrape(t, e.reg)
	if !strings.Contains(body, `vramseal_collector_success{collector="gpu"} 0`+"\n") || len(lines(body, "vramseal_gpu_")) != 0 {
		t.Errorf("before the first read: %q", lines(body, "vramseal_gpu_"))
	}
}

// fakeNVML is an nvml.Library in memory.
type fakeNVML struct {
	initErr error
	devs    []fakeNVMLDevice
}

func (f *fakeNVML) Init() error                    { return f.initErr }
func (f *fakeNVML) Shutdown() error                { return nil }
func (f *fakeNVML) DriverVersion() (string, error) { return "570.86.15", nil }
func (f *fakeNVML) DeviceCount() (int, error)      { return len(f.devs), nil }
func (f *fakeNVML) Device(i int) (nvml.Device, error) {
	if f.initErr != nil {
		panic("NVML call after a failed Init")
	}
	return f.devs[i], nil
}

func (f *fakeNVML) NewEventSet() (nvml.EventSet, error) {
	return nil, &nvml.ReturnError{Op: "event set", Code: 3, Message: "ERROR_NOT_SUPPORTED"}
}

func (f *fakeNVML) DeviceByUUID(string) (nvml.Device, error) {
	return nil, &nvml.ReturnError{Op: "device handle by UUID", Code: 6, Message: "ERROR_NOT_FOUND"}
}

type fakeNVMLDevice struct{ i int }

func (d fakeNVMLDevice) UUID() (string, error) { return fmt.Sprintf("GPU-%d", d.i), nil }
func (d fakeNVMLDevice) Name() (string, error) { return "NVIDIA H100 80GB HBM3", nil }
func (d fakeNVMLDevice) MemoryInfo() (nvml.Memory, error) {
	return nvml.Memory{Total: 80, Used: 10, Free: 65, Reserved: 5, HasReserved: true}, nil
}
func (d fakeNVMLDevice) TotalECCErrors(unc bool) (uint64, error) {
	if unc {
		return 1, nil
	}
	return 9, nil
}
func (d fakeNVMLDevice) RemappedRows() (nvml.RemappedRows, error) {
	return nvml.RemappedRows{Correctable: 2, Uncorrectable: 1, Pending: true}, nil
}
func (d fakeNVMLDevice) RetiredPages() (int, int, error) {
	return 0, 0, &nvml.ReturnError{Op: "retired pages", Code: 3, Message: "ERROR_NOT_SUPPORTED"}
}
func (d fakeNVMLDevice) ECCMode() (bool, error) { return true, nil }
func (d fakeNVMLDevice) MIGMode() (bool, error) { return false, nil }
func (d fakeNVMLDevice) PCIBusID() (string, error) {
	return fmt.Sprintf("00000000:%02X:00.0", d.i+0x3b), nil
}
func (d fakeNVMLDevice) Processes() ([]nvml.Process, error) { return nil, nil }
func (d fakeNVMLDevice) MIGDevices() ([]nvml.MIGDevice, error) {
	return nil, &nvml.ReturnError{Op: "MIG devices", Code: 3, Message: "ERROR_NOT_SUPPORTED"}
}

func TestNVMLSource(t *testing.T) {
	src := collector.NewNVMLSource(&fakeNVML{devs: []fakeNVMLDevice{{0}}}, quietLogger())
	e := newEnv(t, envOpts{gpus: 1, mutate: func(o *collector.Options) { o.GPU = src; o.Device = "cuda" }})
	e.refresh(t)
	want := `
# HELP vramseal_gpu_memory_reserved_bytes GPU memory the driver reserves for itself (where the driver reports it).
# TYPE vramseal_gpu_memory_reserved_bytes gauge
vramseal_gpu_memory_reserved_bytes{gpu="0",uuid="GPU-0"} 5
# HELP vramseal_gpu_remapped_rows Memory rows remapped, by the kind of error that caused it (correctable or uncorrectable; where supported).
# TYPE vramseal_gpu_remapped_rows gauge
vramseal_gpu_remapped_rows{gpu="0",type="correctable",uuid="GPU-0"} 2
vramseal_gpu_remapped_rows{gpu="0",type="uncorrectable",uuid="GPU-0"} 1
# HELP vramseal_gpu_row_remap_pending Whether a row remap is pending and the GPU needs a reset (where supported).
# TYPE vramseal_gpu_row_remap_pending gauge
vramseal_gpu_row_remap_pending{gpu="0",uuid="GPU-0"} 1
# HELP vramseal_gpu_info GPU identity, always 1, while the GPU answers (a lost GPU's series disappears). Simulated GPUs have name "vramseal simulated GPU" and driver_version "simulated"; pci_bus_id is empty where the driver does not report it.
# TYPE vramseal_gpu_info gauge
vramseal_gpu_info{driver_version="570.86.15",gpu="0",name="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:3B:00.0",uuid="GPU-0"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "vramseal_gpu_memory_reserved_bytes",
		"vramseal_gpu_remapped_rows", "vramseal_gpu_row_remap_pending", "vramseal_gpu_info", "vramseal_gpu_retired_pages"); err != nil {
		t.Fatal(err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNVMLSourceWithoutLibraryIsNoData(t *testing.T) {
	lib := &fakeNVML{initErr: fmt.Errorf("dlopen: %w", nvml.ErrLibraryNotFound)}
	src := collector.NewNVMLSource(lib, quietLogger())
	if _, err := src.Telemetry(context.Background()); !errors.Is(err, collector.ErrNoData) {
		t.Fatalf("Telemetry without NVML: %v, want ErrNoData", err)
	}
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.GPU = src }})
	_ = e.set.Refresh(context.Background())
	body := scrape(t, e.reg)
	if !strings.Contains(body, `vramseal_collector_success{collector="gpu"} 0`+"\n") || len(lines(body, "vramseal_gpu_")) != 0 {
		t.Errorf("without NVML: success %q, gpu series %q", lines(body, `vramseal_collector_success{collector="gpu"}`), lines(body, "vramseal_gpu_"))
	}
	// The driver appears later (loaded after the agent started): the next
	// read opens NVML and the data comes.
	lib.initErr = nil
	lib.devs = []fakeNVMLDevice{{0}}
	e.refresh(t)
	body = scrape(t, e.reg)
	if !strings.Contains(body, `vramseal_collector_success{collector="gpu"} 1`+"\n") || len(lines(body, `vramseal_gpu_up{gpu="0",uuid="GPU-0"} 1`)) != 1 {
		t.Errorf("after the driver appeared: %q", lines(body, "vramseal_gpu_up"))
	}
}

// TestNVMLMissingInRealProcess runs the collectors over the machine's real
// NVML in a child process and scrapes them there: on a machine without
// libnvidia-ml the child must report success 0 and exit normally.
func TestNVMLMissingInRealProcess(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$") // TestMain does the child's work
	cmd.Env = append(os.Environ(), "VRAMSEAL_COLLECTOR_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child died: %v\n%s", err, out)
	}
	s := string(out)
	switch {
	case strings.Contains(s, "gpu-success 1"):
		// A GPU machine: the real NVML's numbers must make sense.
		t.Logf("NVML present here: %s", s)
		if !strings.Contains(s, "memory-ok") {
			t.Fatalf("real NVML telemetry looks wrong:\n%s", s)
		}
	case !strings.Contains(s, "gpu-success 0"):
		t.Fatalf("child output lacks the gpu collector's success:\n%s", s)
	}
}

func TestMain(m *testing.M) {
	if os.Getenv("VRAMSEAL_COLLECTOR_CHILD") == "1" {
		src := collector.NewNVMLSource(nvml.System(), quietLogger())
		set, err := collector.New(collector.Options{GPU: src, Device: "cuda", Logger: quietLogger()})
		if err != nil {
			fmt.Println("new:", err)
			os.Exit(3)
		}
		err = set.Refresh(context.Background())
		fmt.Println("refresh:", err)
		reg := prometheus.NewRegistry()
		reg.MustRegister(set)
		mfs, err := reg.Gather()
		if err != nil {
			fmt.Println("gather:", err)
			os.Exit(3)
		}
		total, used, free := map[string]float64{}, map[string]float64{}, map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				v, gpu := m.GetGauge().GetValue(), ""
				for _, lp := range m.GetLabel() {
					if lp.GetName() == "gpu" {
						gpu = lp.GetValue()
					}
				}
				switch mf.GetName() {
				case "vramseal_collector_success":
					if m.GetLabel()[0].GetValue() == "gpu" {
						fmt.Printf("gpu-success %g\n", v)
					}
				case "vramseal_gpu_memory_total_bytes":
					total[gpu] = v
				case "vramseal_gpu_memory_used_bytes":
					used[gpu] = v
				case "vramseal_gpu_memory_free_bytes":
					free[gpu] = v
				case "vramseal_gpu_info":
					fmt.Printf("gpu-info %s\n", m.String())
				}
			}
		}
		ok := len(total) > 0
		for g, t := range total {
			fmt.Printf("gpu %s: total %g used %g free %g\n", g, t, used[g], free[g])
			ok = ok && t > 0 && used[g] <= t && free[g] <= t
		}
		if ok {
			fmt.Println("memory-ok")
		}
		_ = src.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestGPUTelemetryReadsTheCache: GPUTelemetry serves what the last
// background read cached (the numbers /metrics serves), never reads the
// GPUs itself, and is a copy.
func TestGPUTelemetryReadsTheCache(t *testing.T) {
	e := newEnv(t, envOpts{})
	if snap := e.set.GPUTelemetry(); snap.GPUs != nil || snap.Fresh || !snap.ReadAt.IsZero() {
		t.Fatalf("before the first read: %+v", snap)
	}
	e.seal(t, "cached", 1, 4096)
	e.refresh(t)
	e.devs[1].AddECC(3, 1) // not read yet: the snapshot keeps the cached counts
	snap := e.set.GPUTelemetry()
	if !snap.Fresh || snap.Err != nil || len(snap.GPUs) != 2 {
		t.Fatalf("after a read: fresh %v, err %v, %d GPUs", snap.Fresh, snap.Err, len(snap.GPUs))
	}
	if g := snap.GPUs[1]; g.UsedBytes != 4096 || g.ECCCorrected != 0 || !g.Up {
		t.Errorf("GPU 1: used %d, corrected ECC %d, up %v; want the cached 4096, 0, true", g.UsedBytes, g.ECCCorrected, g.Up)
	}
	snap.GPUs[0].UsedBytes = 1 << 40
	if again := e.set.GPUTelemetry(); again.GPUs[0].UsedBytes == 1<<40 {
		t.Error("GPUTelemetry hands out the cache itself, not a copy")
	}
	none := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.GPU = nil }})
	if snap := none.set.GPUTelemetry(); !errors.Is(snap.Err, collector.ErrNoData) {
		t.Errorf("no GPU source: %v, want ErrNoData", snap.Err)
	}
}
