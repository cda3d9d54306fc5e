//go:build cgo && linux && !nonvml

package nvml

import (
	"errors"
	"fmt"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// BuiltIn reports whether this binary was built with NVML support.
const BuiltIn = true

// System returns the machine's NVML (libnvidia-ml.so.1, loaded at Init).
func System() Library { return &system{lib: gonvml.New()} }

type system struct {
	lib gonvml.Interface
}

func retErr(op string, r gonvml.Return) error {
	if r == gonvml.SUCCESS {
		return nil
	}
	return &ReturnError{Op: op, Code: int(r), Message: r.Error()}
}

func (s *system) Init() error     { return retErr("init", s.lib.Init()) }
func (s *system) Shutdown() error { return retErr("shutdown", s.lib.Shutdown()) }

func (s *system) DriverVersion() (string, error) {
	v, r := s.lib.SystemGetDriverVersion()
	return v, retErr("driver version", r)
}

func (s *system) DeviceCount() (int, error) {
	n, r := s.lib.DeviceGetCount()
	return n, retErr("device count", r)
}

func (s *system) Device(index int) (Device, error) {
	d, r := s.lib.DeviceGetHandleByIndex(index)
	if err := retErr("device handle", r); err != nil {
		return nil, err
	}
	return s.device(d), nil
}

func (s *system) DeviceByUUID(uuid string) (Device, error) {
	d, r := s.lib.DeviceGetHandleByUUID(uuid)
	if err := retErr("device handle by UUID", r); err != nil {
		return nil, err
	}
	return s.device(d), nil
}

func (s *system) device(d gonvml.Device) Device {
	// Queries newer than some drivers are looked up rather than called:
	// calling a missing symbol kills the process.
	has := func(sym string) bool { return s.lib.Extensions().LookupSymbol(sym) == nil }
	return &device{
		d:     d,
		memV2: has("nvmlDeviceGetMemoryInfo_v2"),
		remap: has("nvmlDeviceGetRemappedRows"),
		mig:   has("nvmlDeviceGetMigMode"),
		migDevices: has("nvmlDeviceGetMaxMigDeviceCount") && has("nvmlDeviceGetMigDeviceHandleByIndex") &&
			has("nvmlDeviceGetGpuInstanceId"),
	}
}

type device struct {
	d                 gonvml.Device
	memV2, remap, mig bool
	migDevices        bool
}

// missing is the error of a query whose symbol this driver lacks.
func missing(op string) error {
	return &ReturnError{Op: op, Code: codeNotSupported, Message: "not in this driver's NVML"}
}

func (d *device) UUID() (string, error) {
	v, r := d.d.GetUUID()
	return v, retErr("uuid", r)
}

func (d *device) Name() (string, error) {
	v, r := d.d.GetName()
	return v, retErr("name", r)
}

func (d *device) MemoryInfo() (Memory, error) {
	if d.memV2 {
		m, r := d.d.GetMemoryInfo_v2()
		if r == gonvml.SUCCESS {
			return Memory{Total: m.Total, Used: m.Used, Free: m.Free, Reserved: m.Reserved, HasReserved: true}, nil
		}
	}
	m, r := d.d.GetMemoryInfo()
	return Memory{Total: m.Total, Used: m.Used, Free: m.Free}, retErr("memory info", r)
}

func (d *device) TotalECCErrors(uncorrected bool) (uint64, error) {
	t := gonvml.MEMORY_ERROR_TYPE_CORRECTED
	if uncorrected {
		t = gonvml.MEMORY_ERROR_TYPE_UNCORRECTED
	}
	v, r := d.d.GetTotalEccErrors(t, gonvml.AGGREGATE_ECC)
	return v, retErr("total ECC errors", r)
}

func (d *device) RemappedRows() (RemappedRows, error) {
	if !d.remap {
		return RemappedRows{}, missing("remapped rows")
	}
	c, u, pending, failed, r := d.d.GetRemappedRows()
	return RemappedRows{Correctable: c, Uncorrectable: u, Pending: pending, Failed: failed}, retErr("remapped rows", r)
}

func (d *device) RetiredPages() (int, int, error) {
	sbe, r := d.d.GetRetiredPages(gonvml.PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
	if err := retErr("retired pages", r); err != nil {
		return 0, 0, err
	}
	dbe, r := d.d.GetRetiredPages(gonvml.PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
	return len(sbe), len(dbe), retErr("retired pages", r)
}

func (d *device) ECCMode() (bool, error) {
	cur, _, r := d.d.GetEccMode()
	return cur == gonvml.FEATURE_ENABLED, retErr("ECC mode", r)
}

func (d *device) MIGMode() (bool, error) {
	if !d.mig {
		return false, missing("MIG mode")
	}
	cur, _, r := d.d.GetMigMode()
	return cur == gonvml.DEVICE_MIG_ENABLE, retErr("MIG mode", r)
}

func (d *device) PCIBusID() (string, error) {
	p, r := d.d.GetPciInfo()
	if err := retErr("PCI info", r); err != nil {
		return "", err
	}
	return cString(p.BusId[:]), nil
}

// cString is a NUL-terminated C char array as a Go string.
func cString(b []int8) string {
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if c == 0 {
			break
		}
		out = append(out, byte(c))
	}
	return string(out)
}

// usedMemoryUnavailable is NVML_VALUE_NOT_AVAILABLE as NVML reports a
// process's memory where it cannot tell it.
const usedMemoryUnavailable = ^uint64(0)

func (d *device) Processes() ([]Process, error) {
	compute, r := d.d.GetComputeRunningProcesses()
	if err := retErr("compute processes", r); err != nil {
		return nil, err
	}
	graphics, r := d.d.GetGraphicsRunningProcesses()
	if err := retErr("graphics processes", r); err != nil && !errors.Is(err, ErrNotSupported) {
		return nil, err
	}
	return mergeProcesses(compute, graphics), nil
}

// mergeProcesses joins NVML's compute and graphics lists, one entry per
// pid and GPU instance (the larger memory figure of the two).
func mergeProcesses(lists ...[]gonvml.ProcessInfo) []Process {
	type key struct {
		pid uint32
		gi  int
	}
	seen := map[key]int{}
	var out []Process
	for _, list := range lists {
		for _, p := range list {
			gi := -1
			if p.GpuInstanceId != ^uint32(0) { // NVML's "no instance"
				gi = int(p.GpuInstanceId)
			}
			np := Process{PID: p.Pid, GPUInstanceID: gi, UsedBytes: p.UsedGpuMemory, HasUsed: p.UsedGpuMemory != usedMemoryUnavailable}
			if !np.HasUsed {
				np.UsedBytes = 0
			}
			k := key{p.Pid, gi}
			if i, ok := seen[k]; ok {
				if np.UsedBytes > out[i].UsedBytes {
					out[i] = np
				}
				continue
			}
			seen[k] = len(out)
			out = append(out, np)
		}
	}
	return out
}

func (d *device) MIGDevices() ([]MIGDevice, error) {
	if !d.migDevices {
		return nil, missing("MIG devices")
	}
	n, r := d.d.GetMaxMigDeviceCount()
	if err := retErr("max MIG device count", r); err != nil {
		return nil, err
	}
	var out []MIGDevice
	for i := range n {
		m, r := d.d.GetMigDeviceHandleByIndex(i)
		if r == gonvml.ERROR_NOT_FOUND || r == gonvml.ERROR_INVALID_ARGUMENT {
			continue // no MIG device in that slot
		}
		if err := retErr("MIG device handle", r); err != nil {
			return out, err
		}
		gi, r := m.GetGpuInstanceId()
		if err := retErr("GPU instance id", r); err != nil {
			return out, err
		}
		uuid, r := m.GetUUID()
		if err := retErr("MIG uuid", r); err != nil {
			return out, err
		}
		name, _ := m.GetName()
		mem, r := m.GetMemoryInfo()
		if err := retErr("MIG memory info", r); err != nil {
			return out, err
		}
		out = append(out, MIGDevice{GPUInstanceID: gi, UUID: uuid, Profile: MIGProfile(name),
			Memory: Memory{Total: mem.Total, Used: mem.Used, Free: mem.Free}})
	}
	return out, nil
}

func (s *system) NewEventSet() (EventSet, error) {
	if s.lib.Extensions().LookupSymbol("nvmlEventSetCreate") != nil {
		return nil, missing("event set")
	}
	set, r := s.lib.EventSetCreate()
	if err := retErr("event set create", r); err != nil {
		return nil, err
	}
	return &eventSet{set: set}, nil
}

type eventSet struct {
	set gonvml.EventSet
}

func (e *eventSet) RegisterXID(d Device) error {
	dev, ok := d.(*device)
	if !ok {
		return fmt.Errorf("register XID events: not an NVML device (%T)", d)
	}
	types, r := dev.d.GetSupportedEventTypes()
	if err := retErr("supported event types", r); err != nil {
		return err
	}
	if types&gonvml.EventTypeXidCriticalError == 0 {
		return missing("XID events")
	}
	return retErr("register events", dev.d.RegisterEvents(gonvml.EventTypeXidCriticalError, e.set))
}

func (e *eventSet) Wait(timeoutMS uint32) (XIDEvent, error) {
	data, r := e.set.Wait(timeoutMS)
	if err := retErr("event set wait", r); err != nil {
		return XIDEvent{}, err
	}
	ev := XIDEvent{XID: data.EventData}
	if data.Device != nil {
		ev.UUID, _ = data.Device.GetUUID()
	}
	return ev, nil
}

func (e *eventSet) Free() error { return retErr("event set free", e.set.Free()) }
