package cuda

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

// countingLoader loads through dlOpen and counts what is closed.
type countingLoader struct {
	mu     sync.Mutex
	tried  []string
	closed int
	// path maps a name Open asks for onto the file to load ("" refuses).
	path func(name string) string
}

type countedLib struct {
	library
	l *countingLoader
}

func (c *countedLib) Close() error {
	c.l.mu.Lock()
	c.l.closed++
	c.l.mu.Unlock()
	return c.library.Close()
}

func (l *countingLoader) load(name string) (library, error) {
	l.mu.Lock()
	l.tried = append(l.tried, name)
	l.mu.Unlock()
	p := l.path(name)
	if p == "" {
		return nil, errors.New(name + ": cannot open shared object file")
	}
	lib, err := dlOpen(p)
	if err != nil {
		return nil, err
	}
	return &countedLib{lib, l}, nil
}

// TestDriverNeverUnloaded: once cuInit ran, the driver library is never
// closed (the real driver's threads run its code): not when the last
// device closes, not when Open fails after cuInit. It is closed only when
// binding failed before cuInit was called.
func TestDriverNeverUnloaded(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("devices", 2)
	l := &countingLoader{path: func(string) string { return f.path }}
	ctx := context.Background()
	for range 3 { // open and close all devices, three times over
		devs, err := Open(ctx, Options{LibraryPath: "libcuda.so.1", load: l.load, Workers: 1})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range devs {
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	f.failNext(t, "cuDeviceGetCount", ResultUnknown, 1)
	if _, err := Open(ctx, Options{LibraryPath: "libcuda.so.1", load: l.load}); err == nil {
		t.Fatal("Open with cuDeviceGetCount failing succeeded")
	}
	f.failNext(t, "cuInit", ResultNoDevice, 1)
	if _, err := Open(ctx, Options{LibraryPath: "libcuda.so.1", load: l.load}); !errors.Is(err, ErrNoDevice) {
		t.Fatalf("cuInit failing: %v", err)
	}
	f.failNext(t, "cuInit", ResultStubLibrary, 1)
	if _, err := Open(ctx, Options{LibraryPath: "libcuda.so.1", load: l.load}); !errors.Is(err, ErrNoDriver) ||
		!strings.Contains(err.Error(), f.path) || !strings.Contains(err.Error(), "stub") {
		t.Errorf("a stub library: %v: want ErrNoDriver naming the file", err)
	}
	if l.closed != 0 {
		t.Errorf("the driver library was closed %d times after cuInit", l.closed)
	}
	// The fake still answers: its state survived every Close.
	if f.get("calls:cuInit") != 6 {
		t.Errorf("cuInit called %d times, want 6", f.get("calls:cuInit"))
	}
	f.expectClean(t)

	g := newFake(t, fakeNoMemInfo)
	m := &countingLoader{path: func(string) string { return g.path }}
	if _, err := Open(ctx, Options{LibraryPath: "x", load: m.load}); !errors.Is(err, ErrNoDriver) {
		t.Fatalf("driver lacking a symbol: %v", err)
	}
	if m.closed != 1 || g.get("calls:cuInit") != 0 {
		t.Errorf("a driver refused before cuInit: closed %d times, cuInit called %d times; want 1, 0", m.closed, g.get("calls:cuInit"))
	}
}

// TestDriverSearch: the loader's search first, then the driver folders,
// never a stubs folder; a configured path is the only one tried; the
// error of a failed search names every folder tried and the override.
func TestDriverSearch(t *testing.T) {
	f := newFake(t, fakeFull)
	mounted := "/usr/local/nvidia/lib64/libcuda.so.1"
	l := &countingLoader{path: func(name string) string {
		if name == mounted {
			return f.path
		}
		return ""
	}}
	devs, err := Open(context.Background(), Options{load: l.load, Workers: 1})
	if err != nil {
		t.Fatalf("driver mounted at %s not found: %v (tried %q)", mounted, err, l.tried)
	}
	defer devs[0].Close()
	if len(l.tried) != 2 || l.tried[0] != DefaultLibrary || l.tried[1] != mounted {
		t.Errorf("tried %q: want the loader's search, then %s", l.tried, mounted)
	}
	// Library is the file the process mapped, here the fake's copy.
	if got := devs[0].Library(); got != f.path {
		t.Errorf("Library() = %q, want the mapped file %q", got, f.path)
	}

	for _, arch := range []string{"amd64", "arm64"} {
		c := libraryCandidates("", arch)
		if c[0] != DefaultLibrary || len(c) < 4 {
			t.Errorf("%s: candidates %q", arch, c)
		}
		for _, p := range c {
			if strings.Contains(p, "stubs") || strings.Contains(p, "/cuda/") {
				t.Errorf("%s: candidate %s is a toolkit folder", arch, p)
			}
		}
	}
	if c := libraryCandidates("/opt/drv/libcuda.so.1", "amd64"); len(c) != 1 || c[0] != "/opt/drv/libcuda.so.1" {
		t.Errorf("configured path: candidates %q", c)
	}

	none := &countingLoader{path: func(string) string { return "" }}
	_, err = Open(context.Background(), Options{load: none.load})
	if !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "/usr/local/nvidia/lib64") || !strings.Contains(err.Error(), "cuda.library") {
		t.Errorf("failed search: %v", err)
	}
	if len(none.tried) != len(libraryCandidates("", runtime.GOARCH)) {
		t.Errorf("failed search tried %q", none.tried)
	}
}

func TestFileAt(t *testing.T) {
	maps := []byte(`55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 123 /usr/bin/x
7f1000000000-7f1000200000 r-xp 00010000 08:01 456 /usr/lib/x86_64-linux-gnu/libcuda.so.570.1
7f1000200000-7f1000300000 rw-p 00000000 00:00 0
7f2000000000-7f2000001000 r-xp 00000000 08:01 789 /tmp/a dir/libcuda.so.1
`)
	for addr, want := range map[uintptr]string{
		0x7f1000000000: "/usr/lib/x86_64-linux-gnu/libcuda.so.570.1",
		0x7f10001fffff: "/usr/lib/x86_64-linux-gnu/libcuda.so.570.1",
		0x7f1000200000: "",
		0x7f2000000010: "/tmp/a dir/libcuda.so.1",
		0x1:            "",
	} {
		if got := fileAt(maps, addr); got != want {
			t.Errorf("fileAt(%#x) = %q, want %q", addr, got, want)
		}
	}
}

// TestOptionalSymbols: a driver lacking the optional symbols, or failing
// them, opens; MIG is then unknown and waiting threads spin, and
// Limitations says so. On CUDA 13 the legacy UUID call proves nothing, so
// MIG is unknown there too, never guessed.
func TestOptionalSymbols(t *testing.T) {
	limited := func(d *Device, want ...string) {
		t.Helper()
		got := strings.Join(d.Limitations(), "; ")
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("Limitations() = %q: want it to say %q", got, w)
			}
		}
	}
	f := newFake(t, fakeNoOptional)
	f.set("mig", 1)
	f.set("version", 12080)
	d := open(t, f)[0]
	if p := d.StaticProperties(); p.MIG == sealer.MIGEnabled || !strings.HasPrefix(p.UUID, "GPU-") {
		t.Errorf("without the legacy symbol: %+v", p)
	}
	limited(d, "lacks cuDeviceGetUuid", "lacks cuDevicePrimaryCtxSetFlags_v2")
	if f.get("ctx_flags") != -1 {
		t.Error("flags set through a missing symbol")
	}

	g := newFake(t, fakeFull)
	g.set("mig", 1)
	g.set("version", 12080)
	g.failNext(t, "cuDeviceGetUuid", ResultUnknown, 1)
	g.failNext(t, "cuDevicePrimaryCtxSetFlags_v2", ResultInvalidValue, 1)
	d = open(t, g, func(o *Options) { o.Workers = 1 })[0]
	if d.StaticProperties().MIG == sealer.MIGEnabled {
		t.Error("a failing legacy call made the device a MIG instance")
	}
	limited(d, "CUDA_ERROR_UNKNOWN", "waiting threads spin")

	h := newFake(t, fakeFull)
	h.set("mig", 1) // the legacy call differs, but on CUDA 13 that means nothing
	d = open(t, h)[0]
	if d.StaticProperties().MIG == sealer.MIGEnabled {
		t.Error("CUDA 13: MIG instance guessed from the legacy UUID")
	}
	limited(d, "CUDA 13")
	if h.get("ctx_flags") != ctxSchedYield || len(d.Limitations()) != 1 {
		t.Errorf("CUDA 13: flags %#x, limitations %q", h.get("ctx_flags"), d.Limitations())
	}
}

// TestFakeBuildsWithWarnings: the fake driver is built with warnings on
// but not fatal, so a newer gcc that warns about something does not fail
// every test that uses it.
func TestFakeBuildsWithWarnings(t *testing.T) {
	for _, f := range fakeCFlags {
		if f == "-Werror" || strings.HasPrefix(f, "-pedantic-errors") {
			t.Errorf("fake driver built with %s", f)
		}
	}
	f := newFake(t, fakeWarn) // builds every variant, this one warns
	if _, err := Open(context.Background(), Options{LibraryPath: f.path, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("gcc", append(append([]string(nil), fakeCFlags...), "-DFAKECUDA_WARN", "-o",
		filepath.Join(t.TempDir(), "w.so"), filepath.Join("testdata", "fakecuda.c"), "-lpthread")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "warning") {
		t.Errorf("the warning variant should build and warn: %v\n%s", err, out)
	}
}

// TestStickyResults: every code after which the context is unusable maps
// onto sealer.ErrDeviceLost, each by name.
func TestStickyResults(t *testing.T) {
	for _, r := range []Result{
		ResultDeinitialized, ResultDeviceUnavailable, ResultECCUncorrectable, ResultNVLinkUncorrectable,
		ResultIllegalAddress, ResultLaunchTimeout, ResultContextIsDestroyed, ResultAssert,
		ResultHardwareStackError, ResultIllegalInstruction, ResultMisalignedAddress,
		ResultInvalidAddressSpace, ResultInvalidPC, ResultLaunchFailed,
	} {
		if !r.sticky() {
			t.Errorf("%s is not sticky", r.Name())
		}
		if strings.HasPrefix(r.Name(), "CUDA_ERROR_") && strings.Trim(strings.TrimPrefix(r.Name(), "CUDA_ERROR_"), "0123456789") == "" {
			t.Errorf("code %d has no name", int32(r))
		}
	}
	if ResultLaunchTimeout != 702 || ResultLaunchTimeout.Name() != "CUDA_ERROR_LAUNCH_TIMEOUT" {
		t.Error("CUDA_ERROR_LAUNCH_TIMEOUT")
	}
	for _, r := range []Result{Success, ResultInvalidValue, ResultOutOfMemory, ResultNotFound, ResultInvalidPTX, ResultUnknown} {
		if r.sticky() {
			t.Errorf("%s is sticky", r.Name())
		}
	}
}
