//go:build cgo && linux && !nonvml

package nvml

import (
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
	}
}

type device struct {
	d                 gonvml.Device
	memV2, remap, mig bool
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
