package nvml

import (
	"errors"
	"fmt"
	"strings"
	"sync"
)

// Library is the part of NVML vramseal uses. The real one is System();
// tests use a fake. Implementations need not be safe for concurrent use:
// Client serialises its calls.
type Library interface {
	// Init loads and initialises NVML. Nothing else may be called unless it
	// returned nil.
	Init() error
	// Shutdown releases NVML.
	Shutdown() error
	// DriverVersion is the driver's version string.
	DriverVersion() (string, error)
	// DeviceCount is the number of GPUs NVML sees.
	DeviceCount() (int, error)
	// Device returns the GPU with that index.
	Device(index int) (Device, error)
	// DeviceByUUID returns the GPU with that UUID ("GPU-..." or "MIG-...").
	DeviceByUUID(uuid string) (Device, error)
	// NewEventSet creates an empty event set (see EventSet).
	NewEventSet() (EventSet, error)
}

// Device is the part of an NVML device handle vramseal uses. Calls that a
// device does not support return an error that matches ErrNotSupported.
type Device interface {
	UUID() (string, error)
	Name() (string, error)
	// MemoryInfo returns the memory counters; Reserved is reported when the
	// driver has the _v2 query.
	MemoryInfo() (Memory, error)
	// TotalECCErrors returns the aggregate (lifetime) ECC error count of
	// the given kind.
	TotalECCErrors(uncorrected bool) (uint64, error)
	// RemappedRows reports the rows remapped for correctable and
	// uncorrectable errors, whether a remap is pending and whether one failed.
	RemappedRows() (RemappedRows, error)
	// RetiredPages returns the count of pages retired for multiple
	// single-bit errors and for double-bit errors.
	RetiredPages() (singleBit, doubleBit int, err error)
	// ECCMode is whether ECC is currently enabled.
	ECCMode() (bool, error)
	// MIGMode is whether MIG is currently enabled.
	MIGMode() (bool, error)
	// PCIBusID is the device's PCI bus id ("00000000:3B:00.0").
	PCIBusID() (string, error)
	// Processes are the compute and graphics processes running on the
	// device (host pids; a process in both lists is reported once).
	Processes() ([]Process, error)
	// MIGDevices are the MIG devices (GPU instances) of a GPU in MIG mode.
	MIGDevices() ([]MIGDevice, error)
}

// Memory is a device's memory in bytes.
type Memory struct {
	Total, Used, Free uint64
	// Reserved is memory the driver keeps for itself; HasReserved tells
	// whether the driver reported it.
	Reserved    uint64
	HasReserved bool
}

// RemappedRows is NVML's row-remapping state (Ampere and later).
type RemappedRows struct {
	Correctable, Uncorrectable int
	Pending, Failed            bool
}

// Errors the package reports. Match them with errors.Is.
var (
	// ErrLibraryNotFound: libnvidia-ml.so.1 could not be loaded (no driver).
	ErrLibraryNotFound = errors.New("NVML library not found")
	// ErrNotBuiltIn: this binary was built without NVML (CGO_ENABLED=0 or
	// the nonvml tag).
	ErrNotBuiltIn = errors.New("NVML support not built in (built without cgo)")
	// ErrNotSupported: the device does not support the query.
	ErrNotSupported = errors.New("not supported by the device")
	// ErrGPULost: the GPU fell off the bus or needs a reset.
	ErrGPULost = errors.New("GPU is lost")
	// ErrClosed: the Client was closed.
	ErrClosed = errors.New("NVML client closed")
)

// NVML return codes (nvml.h) that map to the errors above.
const (
	codeNotSupported    = 3
	codeLibraryNotFound = 12
	codeGPUIsLost       = 15
)

// ReturnError is a failed NVML call: the call and NVML's return code.
type ReturnError struct {
	Op      string
	Code    int
	Message string
}

func (e *ReturnError) Error() string {
	return fmt.Sprintf("nvml %s: %s (code %d)", e.Op, e.Message, e.Code)
}

// Is matches the sentinel errors that have an NVML return code.
func (e *ReturnError) Is(target error) bool {
	switch target {
	case ErrNotSupported:
		return e.Code == codeNotSupported
	case ErrLibraryNotFound:
		return e.Code == codeLibraryNotFound
	case ErrGPULost:
		return e.Code == codeGPUIsLost
	case ErrTimeout:
		return e.Code == codeTimeout
	}
	return false
}

// Client is an initialised NVML. It exists only after Init succeeded, so
// no NVML call can follow a failed Init. Its methods are safe for
// concurrent use; after Close they return ErrClosed.
type Client struct {
	mu     sync.Mutex
	lib    Library
	closed bool

	// events is the XID event set (nil until registered, or when no GPU
	// reports XIDs); eventsTried once registration was attempted.
	events      EventSet
	eventsTried bool
	registered  int
}

// Open initialises lib and returns a Client over it. When Init fails
// (ErrLibraryNotFound on a machine without the driver, ErrNotBuiltIn in a
// build without cgo) it returns the error and no Client.
func Open(lib Library) (*Client, error) {
	if lib == nil {
		return nil, errors.New("nvml: no library")
	}
	if err := lib.Init(); err != nil {
		return nil, fmt.Errorf("nvml: init: %w", err)
	}
	return &Client{lib: lib}, nil
}

// Close shuts NVML down. Closing twice is not an error.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	var freeErr error
	if c.events != nil {
		freeErr = c.events.Free()
		c.events = nil
	}
	if err := errors.Join(freeErr, c.lib.Shutdown()); err != nil {
		return fmt.Errorf("nvml: shutdown: %w", err)
	}
	return nil
}

// Telemetry is one GPU's state as NVML reports it. Fields of queries the
// device does not support are left at zero with their Has flag false.
type Telemetry struct {
	Index         int
	UUID          string
	Name          string
	DriverVersion string
	// Up is false when the device could not be queried (lost, reset, a
	// handle error); only Index and, when known, UUID are set then.
	Up     bool
	Memory Memory

	HasECC                       bool
	ECCCorrected, ECCUncorrected uint64

	HasRemappedRows bool
	RemappedRows    RemappedRows

	HasRetiredPages                        bool
	RetiredPagesSingleBit, RetiredPagesDBE int

	// PCIBusID is "" where the driver does not report it.
	PCIBusID string
	// HasProcesses is whether the process list could be read.
	HasProcesses bool
	Processes    []Process
	// MIG are the GPU's MIG devices when MIG is on (nil otherwise).
	MIG []MIGDevice

	// Errors are the failures of optional queries other than "not
	// supported", for the debug log.
	Errors []error
}

// Telemetry queries every GPU. A GPU that fails its required queries is
// reported with Up false; an error is returned only when NVML itself
// fails (device count, driver version) or the Client is closed.
func (c *Client) Telemetry() ([]Telemetry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	driver, err := c.lib.DriverVersion()
	if err != nil {
		return nil, fmt.Errorf("nvml: driver version: %w", err)
	}
	n, err := c.lib.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("nvml: device count: %w", err)
	}
	out := make([]Telemetry, 0, n)
	for i := 0; i < n; i++ {
		out = append(out, c.deviceTelemetry(i, driver))
	}
	return out, nil
}

func (c *Client) deviceTelemetry(i int, driver string) Telemetry {
	t := Telemetry{Index: i, DriverVersion: driver}
	d, err := c.lib.Device(i)
	if err != nil {
		t.Errors = append(t.Errors, fmt.Errorf("GPU %d: handle: %w", i, err))
		return t
	}
	if t.UUID, err = d.UUID(); err != nil {
		t.Errors = append(t.Errors, fmt.Errorf("GPU %d: uuid: %w", i, err))
		return t
	}
	if t.Name, err = d.Name(); err != nil {
		t.Errors = append(t.Errors, fmt.Errorf("GPU %d: name: %w", i, err))
		return t
	}
	if t.Memory, err = d.MemoryInfo(); err != nil {
		t.Errors = append(t.Errors, fmt.Errorf("GPU %d: memory: %w", i, err))
		return t
	}
	t.Up = true
	optional := func(what string, err error) bool {
		if err != nil && !errors.Is(err, ErrNotSupported) {
			t.Errors = append(t.Errors, fmt.Errorf("GPU %d: %s: %w", i, what, err))
		}
		return err == nil
	}
	corr, err1 := d.TotalECCErrors(false)
	unc, err2 := d.TotalECCErrors(true)
	if optional("ECC errors", errors.Join(err1, err2)) {
		t.HasECC, t.ECCCorrected, t.ECCUncorrected = true, corr, unc
	}
	rows, err := d.RemappedRows()
	if optional("remapped rows", err) {
		t.HasRemappedRows, t.RemappedRows = true, rows
	}
	sbe, dbe, err := d.RetiredPages()
	if optional("retired pages", err) {
		t.HasRetiredPages, t.RetiredPagesSingleBit, t.RetiredPagesDBE = true, sbe, dbe
	}
	if bus, err := d.PCIBusID(); optional("PCI bus id", err) {
		t.PCIBusID = bus
	}
	if procs, err := d.Processes(); optional("processes", err) {
		t.HasProcesses, t.Processes = true, procs
	}
	if on, err := d.MIGMode(); err == nil && on {
		if migs, err := d.MIGDevices(); optional("MIG devices", err) {
			t.MIG = migs
		}
	}
	return t
}

// DeviceCount is the number of GPUs NVML sees.
func (c *Client) DeviceCount() (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, ErrClosed
	}
	n, err := c.lib.DeviceCount()
	if err != nil {
		return 0, fmt.Errorf("nvml: device count: %w", err)
	}
	return n, nil
}

// Properties are what the VRAM-only policy may ask of a GPU through NVML.
type Properties struct {
	Index int // -1 when asked by UUID
	// ECCSupported is false when the device has no ECC (then ECCEnabled is
	// false too).
	ECCSupported, ECCEnabled bool
	// MIGSupported is false when the device has no MIG mode.
	MIGSupported, MIGEnabled bool
}

// Properties returns the ECC and MIG modes of the GPU with that index.
func (c *Client) Properties(index int) (Properties, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Properties{}, ErrClosed
	}
	d, err := c.lib.Device(index)
	if err != nil {
		return Properties{Index: index}, fmt.Errorf("nvml: GPU %d: handle: %w", index, err)
	}
	return properties(d, Properties{Index: index}, fmt.Sprintf("GPU %d", index))
}

// PropertiesByUUID returns the ECC and MIG modes of the GPU with that UUID
// (as CUDA reports it; Index is -1). A MIG device's UUID ("MIG-...") is a
// slice of a GPU in MIG mode: it reports MIG enabled without asking.
func (c *Client) PropertiesByUUID(uuid string) (Properties, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Properties{}, ErrClosed
	}
	p := Properties{Index: -1}
	if strings.HasPrefix(uuid, "MIG-") {
		p.MIGSupported, p.MIGEnabled = true, true
	}
	d, err := c.lib.DeviceByUUID(uuid)
	if err != nil {
		return p, fmt.Errorf("nvml: GPU %s: handle: %w", uuid, err)
	}
	if p.MIGEnabled {
		// ECC is the parent GPU's; MIG mode is known.
		on, err := d.ECCMode()
		switch {
		case errors.Is(err, ErrNotSupported):
		case err != nil:
			return p, fmt.Errorf("nvml: GPU %s: ECC mode: %w", uuid, err)
		default:
			p.ECCSupported, p.ECCEnabled = true, on
		}
		return p, nil
	}
	return properties(d, p, "GPU "+uuid)
}

// properties fills p from d's ECC and MIG modes.
func properties(d Device, p Properties, name string) (Properties, error) {
	switch on, err := d.ECCMode(); {
	case errors.Is(err, ErrNotSupported):
	case err != nil:
		return p, fmt.Errorf("nvml: %s: ECC mode: %w", name, err)
	default:
		p.ECCSupported, p.ECCEnabled = true, on
	}
	switch on, err := d.MIGMode(); {
	case errors.Is(err, ErrNotSupported):
	case err != nil:
		return p, fmt.Errorf("nvml: %s: MIG mode: %w", name, err)
	default:
		p.MIGSupported, p.MIGEnabled = true, on
	}
	return p, nil
}
