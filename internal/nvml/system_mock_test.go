//go:build cgo && linux && !nonvml

package nvml

import (
	"errors"
	"testing"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// mockSystem is the cgo binding over go-nvml's mock DGX H100. The presets
// implement neither processes nor events nor several telemetry queries:
// the tests set those methods here.
func mockSystem(t *testing.T) (*system, *server.Server) {
	t.Helper()
	srv := dgxh100.New()
	for _, d := range srv.Devices {
		dev := d.(*server.Device)
		bus := [32]int8{}
		for j, c := range []byte(dev.PciBusID) {
			bus[j] = int8(c)
		}
		dev.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) { return gonvml.PciInfo{BusId: bus}, gonvml.SUCCESS }
		dev.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			return gonvml.Memory_v2{Total: dev.MemoryInfo.Total, Used: dev.MemoryInfo.Used, Free: dev.MemoryInfo.Free}, gonvml.SUCCESS
		}
		dev.GetTotalEccErrorsFunc = func(gonvml.MemoryErrorType, gonvml.EccCounterType) (uint64, gonvml.Return) {
			return 0, gonvml.SUCCESS
		}
		dev.GetRemappedRowsFunc = func() (int, int, bool, bool, gonvml.Return) { return 0, 0, false, false, gonvml.SUCCESS }
		dev.GetRetiredPagesFunc = func(gonvml.PageRetirementCause) ([]uint64, gonvml.Return) {
			return nil, gonvml.ERROR_NOT_SUPPORTED
		}
		dev.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) { return nil, gonvml.SUCCESS }
		dev.GetGraphicsRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
			return nil, gonvml.ERROR_NOT_SUPPORTED
		}
		dev.GetSupportedEventTypesFunc = func() (uint64, gonvml.Return) {
			return gonvml.EventTypeXidCriticalError | gonvml.EventTypeSingleBitEccError, gonvml.SUCCESS
		}
		dev.GetEccModeFunc = func() (gonvml.EnableState, gonvml.EnableState, gonvml.Return) {
			return gonvml.FEATURE_ENABLED, gonvml.FEATURE_ENABLED, gonvml.SUCCESS
		}
	}
	return &system{lib: srv}, srv
}

func TestMockProcessesAndPCIBusID(t *testing.T) {
	sys, srv := mockSystem(t)
	d0 := srv.Devices[0].(*server.Device)
	noGI := ^uint32(0)
	d0.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return []gonvml.ProcessInfo{
			{Pid: 100, UsedGpuMemory: 1 << 30, GpuInstanceId: noGI},
			{Pid: 200, UsedGpuMemory: ^uint64(0), GpuInstanceId: noGI}, // memory not available
		}, gonvml.SUCCESS
	}
	d0.GetGraphicsRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
		return []gonvml.ProcessInfo{{Pid: 100, UsedGpuMemory: 2 << 30, GpuInstanceId: noGI}, {Pid: 300, UsedGpuMemory: 5, GpuInstanceId: noGI}}, gonvml.SUCCESS
	}
	c, err := Open(sys)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ts, err := c.Telemetry()
	if err != nil {
		t.Fatal(err)
	}
	if len(ts) != 8 {
		t.Fatalf("%d GPUs, want the preset's 8", len(ts))
	}
	g := ts[0]
	if g.PCIBusID != "0000:00:00.0" || !g.HasProcesses || len(g.Errors) != 0 {
		t.Fatalf("GPU 0 = bus %q, processes %v, errors %v", g.PCIBusID, g.HasProcesses, g.Errors)
	}
	want := []Process{
		{PID: 100, UsedBytes: 2 << 30, HasUsed: true, GPUInstanceID: -1},
		{PID: 200, GPUInstanceID: -1},
		{PID: 300, UsedBytes: 5, HasUsed: true, GPUInstanceID: -1},
	}
	if len(g.Processes) != len(want) {
		t.Fatalf("processes = %+v, want %+v", g.Processes, want)
	}
	for i := range want {
		if g.Processes[i] != want[i] {
			t.Errorf("process %d = %+v, want %+v", i, g.Processes[i], want[i])
		}
	}
	if ts[1].PCIBusID != "0000:01:00.0" || len(ts[1].Processes) != 0 || !ts[1].HasProcesses {
		t.Errorf("GPU 1 = %+v", ts[1])
	}
}

func TestMockMIGDevices(t *testing.T) {
	sys, srv := mockSystem(t)
	d0 := srv.Devices[0].(*server.Device)
	if ret, _ := d0.SetMigMode(gonvml.DEVICE_MIG_ENABLE); ret != gonvml.SUCCESS {
		t.Fatalf("SetMigMode = %v", ret)
	}
	migs := []*mock.Device{
		{
			GetGpuInstanceIdFunc: func() (int, gonvml.Return) { return 7, gonvml.SUCCESS },
			GetUUIDFunc:          func() (string, gonvml.Return) { return "MIG-aaaa", gonvml.SUCCESS },
			GetNameFunc:          func() (string, gonvml.Return) { return "NVIDIA H100 80GB HBM3 MIG 1g.10gb", gonvml.SUCCESS },
			GetMemoryInfoFunc: func() (gonvml.Memory, gonvml.Return) {
				return gonvml.Memory{Total: 10 << 30, Used: 1 << 30, Free: 9 << 30}, gonvml.SUCCESS
			},
		},
	}
	d0.GetMaxMigDeviceCountFunc = func() (int, gonvml.Return) { return 2, gonvml.SUCCESS }
	d0.GetMigDeviceHandleByIndexFunc = func(i int) (gonvml.Device, gonvml.Return) {
		if i >= len(migs) {
			return nil, gonvml.ERROR_NOT_FOUND
		}
		return migs[i], gonvml.SUCCESS
	}
	c, err := Open(sys)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ts, err := c.Telemetry()
	if err != nil {
		t.Fatal(err)
	}
	want := MIGDevice{GPUInstanceID: 7, UUID: "MIG-aaaa", Profile: "1g.10gb", Memory: Memory{Total: 10 << 30, Used: 1 << 30, Free: 9 << 30}}
	if len(ts[0].MIG) != 1 || ts[0].MIG[0] != want {
		t.Fatalf("MIG = %+v, want [%+v] (errors %v)", ts[0].MIG, want, ts[0].Errors)
	}
	if ts[1].MIG != nil {
		t.Errorf("GPU 1 without MIG has MIG devices %+v", ts[1].MIG)
	}
	// The policy's MIG knob reads the same mode.
	if p, err := c.Properties(0); err != nil || !p.MIGEnabled {
		t.Errorf("Properties(0) = %+v, %v; want MIG enabled", p, err)
	}
}

func TestMockXIDEvents(t *testing.T) {
	sys, srv := mockSystem(t)
	var registered int
	for _, d := range srv.Devices {
		d.(*server.Device).RegisterEventsFunc = func(types uint64, _ gonvml.EventSet) gonvml.Return {
			if types != gonvml.EventTypeXidCriticalError {
				t.Errorf("registered event types %#x, want only critical XIDs", types)
			}
			registered++
			return gonvml.SUCCESS
		}
	}
	d2 := srv.Devices[2].(*server.Device)
	queue := []gonvml.EventData{
		{Device: d2, EventType: gonvml.EventTypeXidCriticalError, EventData: 79},
		{Device: d2, EventType: gonvml.EventTypeXidCriticalError, EventData: 48},
	}
	freed := false
	set := &mock.EventSet{
		WaitFunc: func(timeout uint32) (gonvml.EventData, gonvml.Return) {
			if timeout != 0 {
				t.Errorf("Wait(%d): the drain must not block", timeout)
			}
			if len(queue) == 0 {
				return gonvml.EventData{}, gonvml.ERROR_TIMEOUT
			}
			ev := queue[0]
			queue = queue[1:]
			return ev, gonvml.SUCCESS
		},
		FreeFunc: func() gonvml.Return { freed = true; return gonvml.SUCCESS },
	}
	srv.EventSetCreateFunc = func() (gonvml.EventSet, gonvml.Return) { return set, gonvml.SUCCESS }
	c, err := Open(sys)
	if err != nil {
		t.Fatal(err)
	}
	evs, n, err := c.XIDs()
	if err != nil || n != 8 || registered != 8 {
		t.Fatalf("XIDs: registered %d (%d calls), err %v", n, registered, err)
	}
	if len(evs) != 2 || evs[0] != (XIDEvent{UUID: d2.UUID, XID: 79}) || evs[1].XID != 48 {
		t.Fatalf("events = %+v", evs)
	}
	if evs, _, err := c.XIDs(); len(evs) != 0 || err != nil || registered != 8 {
		t.Fatalf("second drain = %v, %v (registered %d: once only)", evs, err, registered)
	}
	if err := c.Close(); err != nil || !freed {
		t.Fatalf("Close = %v, event set freed %v", err, freed)
	}
	if _, _, err := c.XIDs(); !errors.Is(err, ErrClosed) {
		t.Fatalf("XIDs after Close = %v", err)
	}
}
