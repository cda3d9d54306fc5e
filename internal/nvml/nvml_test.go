package nvml

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/internal/testenv"
)

// fakeLib is a Library in memory that records every call and fails any
// call made before a successful Init, as the real NVML effectively does.
type fakeLib struct {
	initErr  error
	inited   bool
	calls    []string
	driver   string
	devices  []*fakeDevice
	countErr error
	events   *fakeEvents
	t        *testing.T
}

func (l *fakeLib) call(name string) {
	l.calls = append(l.calls, name)
	if name != "Init" && !l.inited {
		l.t.Errorf("NVML %s called without a successful Init (the real library kills the process)", name)
	}
}

func (l *fakeLib) Init() error {
	l.call("Init")
	if l.initErr != nil {
		return l.initErr
	}
	l.inited = true
	return nil
}

func (l *fakeLib) Shutdown() error { l.call("Shutdown"); l.inited = false; return nil }
func (l *fakeLib) DriverVersion() (string, error) {
	l.call("DriverVersion")
	return l.driver, nil
}

func (l *fakeLib) DeviceCount() (int, error) {
	l.call("DeviceCount")
	return len(l.devices), l.countErr
}

func (l *fakeLib) Device(i int) (Device, error) {
	l.call("Device")
	d := l.devices[i]
	if d.lost {
		return nil, &ReturnError{Op: "device handle", Code: codeGPUIsLost, Message: "ERROR_GPU_IS_LOST"}
	}
	return d, nil
}

func (l *fakeLib) DeviceByUUID(uuid string) (Device, error) {
	l.call("DeviceByUUID")
	for _, d := range l.devices {
		if d.uuid == uuid || (strings.HasPrefix(uuid, "MIG-") && d.uuid == "GPU-parent") {
			return d, nil
		}
	}
	return nil, &ReturnError{Op: "device handle by UUID", Code: 6, Message: "ERROR_NOT_FOUND"}
}

func (l *fakeLib) NewEventSet() (EventSet, error) {
	l.call("NewEventSet")
	if l.events == nil {
		return nil, errNS
	}
	return l.events, nil
}

// fakeEvents is an EventSet that hands out its queue.
type fakeEvents struct {
	registered []string
	queue      []XIDEvent
	freed      bool
}

func (e *fakeEvents) RegisterXID(d Device) error {
	fd := d.(*fakeDevice)
	if !fd.xid {
		return errNS
	}
	e.registered = append(e.registered, fd.uuid)
	return nil
}

func (e *fakeEvents) Wait(uint32) (XIDEvent, error) {
	if len(e.queue) == 0 {
		return XIDEvent{}, &ReturnError{Op: "wait", Code: codeTimeout, Message: "ERROR_TIMEOUT"}
	}
	ev := e.queue[0]
	e.queue = e.queue[1:]
	return ev, nil
}

func (e *fakeEvents) Free() error { e.freed = true; return nil }

var errNS = &ReturnError{Op: "x", Code: codeNotSupported, Message: "ERROR_NOT_SUPPORTED"}

type fakeDevice struct {
	uuid, name     string
	mem            Memory
	lost           bool
	ecc            bool // supported
	corr, unc      uint64
	rows           *RemappedRows
	retiredErr     error
	eccOn, migOn   bool
	migUnsupported bool
	xid            bool
	bus            string
	procs          []Process
	migs           []MIGDevice
}

func (d *fakeDevice) PCIBusID() (string, error) {
	if d.bus == "" {
		return "", errNS
	}
	return d.bus, nil
}

func (d *fakeDevice) Processes() ([]Process, error) {
	if d.procs == nil {
		return nil, errNS
	}
	return d.procs, nil
}

func (d *fakeDevice) MIGDevices() ([]MIGDevice, error) { return d.migs, nil }

func (d *fakeDevice) UUID() (string, error)       { return d.uuid, nil }
func (d *fakeDevice) Name() (string, error)       { return d.name, nil }
func (d *fakeDevice) MemoryInfo() (Memory, error) { return d.mem, nil }
func (d *fakeDevice) TotalECCErrors(unc bool) (uint64, error) {
	if !d.ecc {
		return 0, errNS
	}
	if unc {
		return d.unc, nil
	}
	return d.corr, nil
}

func (d *fakeDevice) RemappedRows() (RemappedRows, error) {
	if d.rows == nil {
		return RemappedRows{}, errNS
	}
	return *d.rows, nil
}

func (d *fakeDevice) RetiredPages() (int, int, error) {
	if d.retiredErr != nil {
		return 0, 0, d.retiredErr
	}
	return 2, 1, nil
}

func (d *fakeDevice) ECCMode() (bool, error) {
	if !d.ecc {
		return false, errNS
	}
	return d.eccOn, nil
}

func (d *fakeDevice) MIGMode() (bool, error) {
	if d.migUnsupported {
		return false, errNS
	}
	return d.migOn, nil
}

func TestOpenFailedInitMakesNoOtherCall(t *testing.T) {
	lib := &fakeLib{t: t, initErr: &ReturnError{Op: "init", Code: codeLibraryNotFound, Message: "ERROR_LIBRARY_NOT_FOUND"}}
	c, err := Open(lib)
	if c != nil || !errors.Is(err, ErrLibraryNotFound) {
		t.Fatalf("Open = %v, %v; want no client and ErrLibraryNotFound", c, err)
	}
	if strings.Join(lib.calls, ",") != "Init" {
		t.Fatalf("calls = %v, want only Init", lib.calls)
	}
}

func TestTelemetry(t *testing.T) {
	lib := &fakeLib{t: t, driver: "570.86.15", devices: []*fakeDevice{
		{uuid: "GPU-a", name: "NVIDIA H100 80GB HBM3", ecc: true, corr: 7, unc: 1,
			mem:  Memory{Total: 80 << 30, Used: 1 << 30, Free: 79<<30 - 512<<20, Reserved: 512 << 20, HasReserved: true},
			rows: &RemappedRows{Correctable: 3, Pending: true}, retiredErr: errNS},
		{lost: true},
		{uuid: "GPU-c", name: "NVIDIA GeForce RTX 4090", mem: Memory{Total: 24 << 30, Free: 24 << 30},
			retiredErr: &ReturnError{Op: "retired pages", Code: 999, Message: "ERROR_UNKNOWN"}},
	}}
	c, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Telemetry()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("got %d GPUs, want 3", len(got))
	}
	a, b, cc := got[0], got[1], got[2]
	if !a.Up || a.UUID != "GPU-a" || a.DriverVersion != "570.86.15" || !a.Memory.HasReserved ||
		!a.HasECC || a.ECCCorrected != 7 || a.ECCUncorrected != 1 ||
		!a.HasRemappedRows || a.RemappedRows.Correctable != 3 || !a.RemappedRows.Pending ||
		a.HasRetiredPages || len(a.Errors) != 0 {
		t.Errorf("GPU 0 = %+v", a)
	}
	if b.Up || b.Index != 1 || len(b.Errors) != 1 || !errors.Is(b.Errors[0], ErrGPULost) {
		t.Errorf("lost GPU 1 = %+v", b)
	}
	if !cc.Up || cc.HasECC || cc.HasRemappedRows || cc.HasRetiredPages || len(cc.Errors) != 1 {
		t.Errorf("GPU 2 = %+v (want no ECC, no rows, one retired-pages error)", cc)
	}
}

func TestTelemetryCountError(t *testing.T) {
	lib := &fakeLib{t: t, countErr: &ReturnError{Op: "device count", Code: 999, Message: "ERROR_UNKNOWN"}}
	c, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Telemetry(); err == nil || !strings.Contains(err.Error(), "device count") {
		t.Fatalf("Telemetry err = %v, want the device count error", err)
	}
}

func TestProperties(t *testing.T) {
	lib := &fakeLib{t: t, devices: []*fakeDevice{
		{ecc: true, eccOn: true, migOn: true, uuid: "GPU-parent"},
		{migUnsupported: true, uuid: "GPU-b"},
	}}
	c, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := c.DeviceCount(); err != nil || n != 2 {
		t.Errorf("DeviceCount = %d, %v", n, err)
	}
	p0, err := c.Properties(0)
	if err != nil || !p0.ECCSupported || !p0.ECCEnabled || !p0.MIGSupported || !p0.MIGEnabled {
		t.Errorf("Properties(0) = %+v, %v", p0, err)
	}
	p1, err := c.Properties(1)
	if err != nil || p1.ECCSupported || p1.ECCEnabled || p1.MIGSupported || p1.MIGEnabled {
		t.Errorf("Properties(1) = %+v, %v", p1, err)
	}
	pu, err := c.PropertiesByUUID("GPU-b")
	if err != nil || pu.Index != -1 || pu.MIGSupported {
		t.Errorf("PropertiesByUUID(GPU-b) = %+v, %v", pu, err)
	}
	pm, err := c.PropertiesByUUID("MIG-0123")
	if err != nil || !pm.MIGEnabled || !pm.ECCEnabled {
		t.Errorf("PropertiesByUUID(MIG-0123) = %+v, %v", pm, err)
	}
	if _, err := c.PropertiesByUUID("GPU-none"); err == nil {
		t.Error("PropertiesByUUID of an unknown GPU succeeded")
	}
}

func TestClosedClientCallsNothing(t *testing.T) {
	lib := &fakeLib{t: t}
	c, err := Open(lib)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	n := len(lib.calls)
	if _, err := c.Telemetry(); !errors.Is(err, ErrClosed) {
		t.Errorf("Telemetry after Close: %v", err)
	}
	if _, err := c.DeviceCount(); !errors.Is(err, ErrClosed) {
		t.Errorf("DeviceCount after Close: %v", err)
	}
	if _, err := c.Properties(0); !errors.Is(err, ErrClosed) {
		t.Errorf("Properties after Close: %v", err)
	}
	if len(lib.calls) != n {
		t.Errorf("calls after Close: %v", lib.calls[n:])
	}
}

func TestNotBuiltIn(t *testing.T) {
	_, err := Open(notBuiltIn{})
	if !errors.Is(err, ErrNotBuiltIn) {
		t.Fatalf("Open(notBuiltIn) = %v", err)
	}
	if !BuiltIn {
		if _, err := Open(System()); !errors.Is(err, ErrNotBuiltIn) {
			t.Fatalf("Open(System()) without cgo = %v", err)
		}
	}
}

func TestReturnErrorIs(t *testing.T) {
	for code, want := range map[int]error{codeNotSupported: ErrNotSupported, codeLibraryNotFound: ErrLibraryNotFound, codeGPUIsLost: ErrGPULost} {
		err := fmt.Errorf("wrapped: %w", &ReturnError{Op: "x", Code: code, Message: "m"})
		if !errors.Is(err, want) {
			t.Errorf("code %d does not match %v", code, want)
		}
	}
	if errors.Is(&ReturnError{Code: 999}, ErrNotSupported) {
		t.Error("code 999 matches ErrNotSupported")
	}
}

// childEnv selects what the test binary does when run as a child process.
const childEnv = "VRAMSEAL_NVML_CHILD"

// TestMain lets the test binary act as a child process that uses the real
// NVML (or its absence) and reports on stdout.
func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "open":
		c, err := Open(System())
		switch {
		case err == nil:
			ts, terr := c.Telemetry()
			fmt.Printf("nvml-ok gpus=%d err=%v\n", len(ts), terr)
			_ = c.Close()
		case errors.Is(err, ErrLibraryNotFound):
			fmt.Println("library-missing:", err)
		case errors.Is(err, ErrNotBuiltIn):
			fmt.Println("not-built-in:", err)
		default:
			fmt.Println("init-failed:", err)
		}
		os.Exit(0)
	case "ungated":
		// What the Client prevents: a call after a failed Init.
		lib := System()
		if err := lib.Init(); err == nil {
			fmt.Println("nvml-ok")
			os.Exit(0)
		}
		_, _ = lib.DeviceCount()
		fmt.Println("survived")
		os.Exit(0)
	}
	os.Exit(2)
}

func child(t *testing.T, mode string) (string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func libraryInstalled() bool {
	for _, dir := range []string{"/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/lib/aarch64-linux-gnu"} {
		if _, err := os.Stat(dir + "/libnvidia-ml.so.1"); err == nil {
			return true
		}
	}
	return false
}

// TestLibraryMissingInRealProcess opens the machine's real NVML in a child
// process: without libnvidia-ml the child must report the missing library
// and exit normally, not die.
func TestLibraryMissingInRealProcess(t *testing.T) {
	out, err := child(t, "open")
	if err != nil {
		t.Fatalf("child died: %v\n%s", err, out)
	}
	switch {
	case !BuiltIn:
		if !strings.HasPrefix(out, "not-built-in:") {
			t.Fatalf("child said %q, want not-built-in", out)
		}
	case strings.HasPrefix(out, "library-missing:"):
		if libraryInstalled() {
			t.Fatalf("child said %q although libnvidia-ml.so.1 is installed", out)
		}
	case strings.HasPrefix(out, "nvml-ok") || strings.HasPrefix(out, "init-failed:"):
		// NVML is on this machine (a GPU machine): the child used it, or
		// its Init failed cleanly, and did not crash.
		t.Logf("NVML present: %s", strings.TrimSpace(out))
	default:
		t.Fatalf("child said %q", out)
	}
}

// TestUngatedCallKillsProcess shows the trap the Client exists for (and that
// the child-process harness sees a crash): without libnvidia-ml, a call
// after a failed Init kills the process.
func TestUngatedCallKillsProcess(t *testing.T) {
	if !BuiltIn {
		testenv.Missing(t, "needs a cgo build (CGO_ENABLED=1), as `make test` builds")
	}
	if libraryInstalled() {
		t.Skip("libnvidia-ml is installed (a GPU machine): the crash needs a machine without it")
	}
	out, err := child(t, "ungated")
	if err == nil && strings.HasPrefix(out, "nvml-ok") {
		t.Skip("NVML initialised here (a GPU machine): nothing to show")
	}
	if err == nil || strings.Contains(out, "survived") {
		t.Fatalf("child survived an NVML call after a failed Init (err %v): %s; go-nvml changed, review the gating", err, out)
	}
	t.Logf("child died as expected: %v: %s", err, strings.TrimSpace(out))
}

// TestBuildsWithoutCgo builds this package and the collectors with
// CGO_ENABLED=0: the agent must build without NVML for the simulated GPU.
func TestBuildsWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds packages; skipped with -short")
	}
	goBin := testenv.Program(t, "go")
	cmd := exec.Command(goBin, "build", "-o", os.DevNull, "github.com/vramseal/vramseal/internal/nvml")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
	cmd = exec.Command(goBin, "vet", "github.com/vramseal/vramseal/collector")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go vet ./collector: %v\n%s", err, out)
	}
}
