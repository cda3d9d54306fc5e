package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ebitengine/purego"

	"github.com/vramseal/vramseal/sealer"
)

// The fake driver is compiled once per test binary; each test loads its own
// copy, so every test starts with a fresh library instance and state.
var (
	fakeOnce  sync.Once
	fakeDir   string
	fakeBuild error
)

func TestMain(m *testing.M) {
	if IsReader() { // the reader process of TestReaderProcess
		os.Exit(ServeReader())
	}
	code := m.Run()
	if fakeDir != "" {
		os.RemoveAll(fakeDir)
	}
	os.Exit(code)
}

// Variants of the fake library.
const (
	fakeFull       = "full"
	fakeNoMemInfo  = "nomeminfo"
	fakeNoOptional = "nooptional"
	// fakeWarn has code gcc warns about, standing for code a newer gcc
	// finds something to warn about: the tests must still build it.
	fakeWarn = "warn"
)

var fakeVariants = map[string][]string{
	fakeFull:       nil,
	fakeNoMemInfo:  {"-DFAKECUDA_OMIT_MEMGETINFO"},
	fakeNoOptional: {"-DFAKECUDA_OMIT_OPTIONAL"},
	fakeWarn:       {"-DFAKECUDA_WARN"},
}

// fakeCFlags builds the fake with warnings on but never fatal: which
// warnings gcc emits changes from release to release, and a test
// double must not fail every test on a newer compiler.
var fakeCFlags = []string{"-Wall", "-Wno-unused-parameter", "-shared", "-fPIC", "-O2"}

func buildFakes() {
	fakeDir, fakeBuild = os.MkdirTemp("", "fakecuda-")
	if fakeBuild != nil {
		return
	}
	for variant, flags := range fakeVariants {
		args := append(append([]string(nil), fakeCFlags...), flags...)
		args = append(args, "-o", filepath.Join(fakeDir, variant+".so"), filepath.Join("testdata", "fakecuda.c"), "-lpthread")
		if out, err := exec.Command("gcc", args...).CombinedOutput(); err != nil {
			fakeBuild = &buildError{err: err, out: string(out)}
			return
		}
	}
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string {
	return "building testdata/fakecuda.c with gcc: " + e.err.Error() + "\n" + e.out
}

// fake is one loaded copy of the fake driver and its control functions.
type fake struct {
	path string
	lib  library
	fail func(name string, code int32, nth int32) int32
	set  func(key string, v int64)
	get  func(key string) int64
}

// newFake copies the variant into t.TempDir() as libcuda.so.1 and opens it
// (through the package's own dlopen layer) for control.
func newFake(t *testing.T, variant string) *fake {
	t.Helper()
	fakeOnce.Do(buildFakes)
	if fakeBuild != nil {
		t.Fatal(fakeBuild)
	}
	b, err := os.ReadFile(filepath.Join(fakeDir, variant+".so"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "libcuda.so.1")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	lib, err := dlOpen(path)
	if err != nil {
		t.Fatal(err)
	}
	f := &fake{path: path, lib: lib}
	for name, fn := range map[string]any{"fakecuda_fail": &f.fail, "fakecuda_set": &f.set, "fakecuda_get": &f.get} {
		p, err := lib.Sym(name)
		if err != nil {
			t.Fatal(err)
		}
		purego.RegisterFunc(fn, p)
	}
	t.Cleanup(func() { lib.Close() })
	return f
}

// failNext makes the nth next call of fn return code.
func (f *fake) failNext(t *testing.T, fn string, code Result, nth int) {
	t.Helper()
	if f.fail(fn, int32(code), int32(nth)) != 0 {
		t.Fatal("fakecuda: too many injected failures")
	}
}

// expectClean checks that nothing the driver handed out is still held.
func (f *fake) expectClean(t *testing.T) {
	t.Helper()
	for _, k := range []string{"retained", "streams", "host_allocs", "dev_allocs", "modules", "vmm_handles", "vmm_maps", "vmm_reserved", "vmm_bytes"} {
		if v := f.get(k); v != 0 {
			t.Errorf("fake driver still holds %d %s", v, k)
		}
	}
}

// expectNoVMM checks that no VMM handle, mapping or reservation is held.
func (f *fake) expectNoVMM(t *testing.T) {
	t.Helper()
	for _, k := range []string{"vmm_handles", "vmm_maps", "vmm_reserved", "vmm_bytes"} {
		if v := f.get(k); v != 0 {
			t.Errorf("fake driver still holds %d %s", v, k)
		}
	}
}

// closeExported closes an exported descriptor, if any.
func closeExported(x sealer.Exported) {
	if x.File != nil {
		x.File.Close()
	}
}
