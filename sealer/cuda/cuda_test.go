package cuda

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda/internal/ptxgen"
)

// open opens every fake device with small staging buffers, so that copies
// span many chunks and both buffers of each worker.
func open(t *testing.T, f *fake, mod ...func(*Options)) []*Device {
	t.Helper()
	opts := Options{LibraryPath: f.path, Workers: 2, StagingBytes: 4096}
	for _, m := range mod {
		m(&opts)
	}
	devs, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, d := range devs {
			d.Close()
		}
	})
	return devs
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// checkLeafDigests writes n random bytes at the start of a new allocation of
// size bytes on d and fails t unless the device's digests of its leaves
// equal the CPU's. It returns the allocation (the caller frees it), the
// data and the CPU's digests.
func checkLeafDigests(ctx context.Context, t *testing.T, d *Device, n, size, leaf uint64) (sealer.Allocation, []byte, []sealer.LeafHash) {
	t.Helper()
	data := randomBytes(t, int(n))
	a, err := d.Alloc(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Write(ctx, a, 0, data); err != nil {
		t.Fatal(err)
	}
	got, err := d.LeafDigests(ctx, a, n, leaf)
	if err != nil {
		t.Fatal(err)
	}
	want := sealer.HashLeaves(data, leaf, 1)
	if len(got) != len(want) {
		t.Fatalf("n=%d L=%d: %d digests, want %d", n, leaf, len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("n=%d L=%d: device leaf %d differs from the CPU", n, leaf, i)
		}
	}
	return a, data, want
}

func TestOpenMissingLibrary(t *testing.T) {
	path := filepath.Join(t.TempDir(), "libcuda.so.1")
	devs, err := Open(context.Background(), Options{LibraryPath: path})
	if !errors.Is(err, ErrNoDriver) || devs != nil {
		t.Fatalf("Open without a driver: %v, %v", devs, err)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "NVIDIA driver") {
		t.Errorf("error does not say what is missing: %v", err)
	}
}

func TestOpenLoaderError(t *testing.T) {
	boom := errors.New("loader refused")
	_, err := Open(context.Background(), Options{load: func(string) (library, error) { return nil, boom }})
	if !errors.Is(err, ErrNoDriver) || !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
}

func TestOpenMissingSymbol(t *testing.T) {
	f := newFake(t, fakeNoMemInfo)
	_, err := Open(context.Background(), Options{LibraryPath: f.path})
	if !errors.Is(err, ErrNoDriver) || !strings.Contains(err.Error(), "cuMemGetInfo_v2") {
		t.Fatalf("Open with a driver lacking a symbol: %v", err)
	}
}

// TestOpenErrors injects a failure into each driver call Open makes and
// checks the error names the call and the code, and that nothing leaks.
func TestOpenErrors(t *testing.T) {
	for _, c := range []struct {
		fn   string
		code Result
		is   error
	}{
		{"cuInit", ResultNoDevice, ErrNoDevice},
		{"cuInit", ResultStubLibrary, ErrNoDriver},
		{"cuInit", ResultUnknown, ResultUnknown},
		{"cuDriverGetVersion", ResultUnknown, ResultUnknown},
		{"cuDeviceGetCount", ResultNotInitialized, ResultNotInitialized},
		{"cuDeviceGet", ResultInvalidDevice, ResultInvalidDevice},
		{"cuDeviceGetName", ResultInvalidValue, ResultInvalidValue},
		{"cuDeviceGetUuid_v2", ResultInvalidValue, ResultInvalidValue},
		{"cuDeviceGetAttribute", ResultInvalidValue, ResultInvalidValue},
		{"cuDeviceTotalMem_v2", ResultInvalidValue, ResultInvalidValue},
		{"cuDevicePrimaryCtxRetain", ResultOutOfMemory, ResultOutOfMemory},
		{"cuCtxSetCurrent", ResultInvalidContext, ResultInvalidContext},
		{"cuStreamCreate", ResultOutOfMemory, ResultOutOfMemory},
		{"cuMemHostAlloc", ResultOutOfMemory, ResultOutOfMemory},
	} {
		t.Run(c.fn+"/"+c.code.Name(), func(t *testing.T) {
			f := newFake(t, fakeFull)
			f.set("devices", 2)
			f.failNext(t, c.fn, c.code, 1)
			devs, err := Open(context.Background(), Options{LibraryPath: f.path, Workers: 3})
			if err == nil {
				for _, d := range devs {
					d.Close()
				}
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.code.Name()) {
				t.Errorf("error %q: want it to wrap %v and name %s", err, c.is, c.code.Name())
			}
			if !strings.Contains(err.Error(), c.fn) {
				t.Errorf("error %q does not name %s", err, c.fn)
			}
			f.expectClean(t)
		})
	}
}

func TestOpenNoDevices(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("devices", 0)
	if _, err := Open(context.Background(), Options{LibraryPath: f.path}); !errors.Is(err, ErrNoDevice) {
		t.Errorf("0 devices: %v", err)
	}
	f.set("devices", 2)
	if _, err := Open(context.Background(), Options{LibraryPath: f.path, Devices: []int{1, 2}}); !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "GPU 2") {
		t.Errorf("ordinal 2 of 2: %v", err)
	}
	if _, err := Open(context.Background(), Options{LibraryPath: f.path, Devices: []int{1, 1}}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("ordinal named twice: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Open(ctx, Options{LibraryPath: f.path}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Open: %v", err)
	}
	f.expectClean(t)
}

func TestProperties(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("devices", 2)
	f.set("integrated", 1)
	f.set("ecc", 0)
	f.set("major", 8)
	f.set("minor", 6)
	f.set("total", 3<<30)
	devs := open(t, f, func(o *Options) { o.Devices = []int{1} })
	if len(devs) != 1 || devs[0].Index() != 1 {
		t.Fatalf("opened %d devices", len(devs))
	}
	want := sealer.GPUProperties{Index: 1, Name: "Fake CUDA GPU 1", UUID: "GPU-f1f2f3f4-f5f6-f7f8-f9fa-fbfcfdfeff00",
		Integrated: true, Compute: sealer.ComputeCapability{Major: 8, Minor: 6}, ECCEnabled: false, TotalMemory: 3 << 30}
	if got, err := devs[0].Properties(context.Background()); err != nil || got != want {
		t.Errorf("properties\n got %+v, %v\nwant %+v", got, err, want)
	}
	if v := devs[0].DriverVersion(); v != 13000 {
		t.Errorf("driver version %d, want 13000", v)
	}
	if n := f.get("calls:cuCtxSetCurrent"); n != 2 {
		t.Errorf("context made current %d times, want once per worker (2)", n)
	}
	if fl := f.get("ctx_flags"); fl != ctxSchedYield {
		t.Errorf("primary context flags %#x, want CU_CTX_SCHED_YIELD", fl)
	}
	// Before CUDA 13 the legacy cuDeviceGetUuid tells a MIG instance.
	g := newFake(t, fakeFull)
	g.set("mig", 1)
	g.set("version", 12080)
	mig := open(t, g, func(o *Options) { o.SpinWait = true })[0].StaticProperties()
	if fl := g.get("ctx_flags"); fl != -1 {
		t.Errorf("SpinWait: primary context flags set to %#x", fl)
	}
	if mig.MIG != sealer.MIGEnabled || mig.UUID != "MIG-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff" {
		t.Errorf("MIG instance: %+v", mig)
	}
}

func TestWriteReadFree(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("total", 64<<20)
	d := open(t, f)[0]
	ctx := context.Background()
	const size = 1<<20 + 123
	a, err := d.Alloc(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{fmt.Sprint(a), fmt.Sprintf("%#v", a), fmt.Sprintf("%+v", a)} {
		if regexp.MustCompile(`0x[0-9a-f]{6,}|\d{9,}`).MatchString(s) || !strings.Contains(s, "bytes") {
			t.Errorf("allocation prints as %q", s)
		}
	}
	info, err := d.MemoryInfo(ctx)
	if g := d.Granularity(); g == 0 || info.Total != 64<<20 || info.Free != 64<<20-roundUp(size, g) || err != nil {
		t.Errorf("MemoryInfo = %+v, %v", info, err)
	}
	data := randomBytes(t, size)
	// Concurrent writes of disjoint ranges, then concurrent reads.
	errs := make(chan error, 16)
	// inParts runs op on 8 disjoint ranges covering the allocation at once.
	inParts := func(op func(lo, hi int) error) {
		var wg sync.WaitGroup
		const parts = 8
		step := size / parts
		for i := range parts {
			lo, hi := i*step, (i+1)*step
			if i == parts-1 {
				hi = size
			}
			wg.Go(func() { errs <- op(lo, hi) })
		}
		wg.Wait()
	}
	inParts(func(lo, hi int) error { return d.Write(ctx, a, uint64(lo), data[lo:hi]) })
	got := make([]byte, size)
	inParts(func(lo, hi int) error { return d.Read(ctx, a, uint64(lo), got[lo:hi]) })
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(got, data) {
		t.Fatal("read back differs from what was written")
	}
	// An odd range in the middle.
	small := make([]byte, 5000)
	if err := d.Read(ctx, a, 777, small); err != nil || !bytes.Equal(small, data[777:5777]) {
		t.Errorf("read of an inner range: %v", err)
	}
	if err := d.Read(ctx, a, size-10, make([]byte, 11)); err == nil {
		t.Error("read past the end: no error")
	}
	if err := d.Free(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := d.Free(ctx, a); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Errorf("second Free: %v", err)
	}
	if err := d.Write(ctx, a, 0, data[:10]); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Errorf("Write after Free: %v", err)
	}
	if _, err := d.Alloc(ctx, 65<<20); !errors.Is(err, sealer.ErrOutOfMemory) || !errors.Is(err, ResultOutOfMemory) {
		t.Errorf("allocation beyond the device: %v", err)
	}
	if _, err := d.Alloc(ctx, 0); err == nil {
		t.Error("zero-byte allocation: no error")
	}
	if f.get("calls:cuMemcpyHtoDAsync_v2") < size/4096 {
		t.Error("writes did not go through the staging buffers in chunks")
	}
}

func TestAllocationOfAnotherDevice(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("devices", 2)
	devs := open(t, f)
	ctx := context.Background()
	a, err := devs[0].Alloc(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := devs[1].Write(ctx, a, 0, []byte{1}); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Errorf("write through the wrong device: %v", err)
	}
	if err := devs[1].Free(ctx, a); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Errorf("free through the wrong device: %v", err)
	}
}

// TestCallErrors injects a failure into each driver call an operation makes
// and checks the operation returns it, named, and leaves nothing behind.
func TestCallErrors(t *testing.T) {
	ctx := context.Background()
	type env struct {
		d *Device
		a sealer.Allocation
	}
	write := func(e env) error { return e.d.Write(ctx, e.a, 0, make([]byte, 20000)) }
	read := func(e env) error { return e.d.Read(ctx, e.a, 0, make([]byte, 20000)) }
	digests := func(e env) error { _, err := e.d.LeafDigests(ctx, e.a, 20000, 4096); return err }
	alloc := func(e env) error { _, err := e.d.Alloc(ctx, 10); return err }
	free := func(e env) error { return e.d.Free(ctx, e.a) }
	export := func(e env) error { x, err := e.d.Export(ctx, e.a); closeExported(x); return err }
	for _, c := range []struct {
		fn   string
		nth  int
		code Result
		op   func(env) error
		is   error
	}{
		{"cuMemCreate", 1, ResultOutOfMemory, alloc, sealer.ErrOutOfMemory},
		{"cuMemAddressReserve", 1, ResultOutOfMemory, alloc, sealer.ErrOutOfMemory},
		{"cuMemMap", 1, ResultInvalidValue, alloc, ResultInvalidValue},
		{"cuMemSetAccess", 1, ResultInvalidValue, alloc, ResultInvalidValue},
		{"cuMemExportToShareableHandle", 1, ResultNotPermitted, export, ResultNotPermitted},
		{"cuMemGetInfo_v2", 1, ResultUnknown, func(e env) error { _, err := e.d.MemoryInfo(ctx); return err }, ResultUnknown},
		{"cuMemcpyHtoDAsync_v2", 1, ResultInvalidValue, write, ResultInvalidValue},
		{"cuMemcpyHtoDAsync_v2", 3, ResultIllegalAddress, write, sealer.ErrDeviceLost},
		{"cuStreamSynchronize", 2, ResultLaunchFailed, write, sealer.ErrDeviceLost},
		{"cuMemcpyDtoHAsync_v2", 1, ResultInvalidValue, read, ResultInvalidValue},
		{"cuMemcpyDtoHAsync_v2", 4, ResultUnknown, read, ResultUnknown},
		{"cuStreamSynchronize", 1, 214, read, sealer.ErrDeviceLost},
		{"cuMemUnmap", 1, ResultInvalidValue, free, ResultInvalidValue},
		{"cuMemAddressFree", 1, ResultInvalidValue, free, ResultInvalidValue},
		{"cuMemRelease", 1, ResultInvalidValue, free, ResultInvalidValue},
		{"cuPointerGetAttribute", 1, ResultInvalidValue, func(e env) error { _, err := e.d.AllocationMemory(ctx, e.a); return err }, ResultInvalidValue},
		{"cuPointerGetAttribute", 2, ResultInvalidValue, func(e env) error { _, err := e.d.AllocationMemory(ctx, e.a); return err }, ResultInvalidValue},
		{"cuModuleLoadDataEx", 1, ResultInvalidPTX, digests, ResultInvalidPTX},
		{"cuModuleGetFunction", 1, ResultNotFound, digests, ResultNotFound},
		{"cuMemAlloc_v2", 1, ResultOutOfMemory, digests, sealer.ErrOutOfMemory},
		{"cuLaunchKernel", 1, ResultLaunchFailed, digests, sealer.ErrDeviceLost},
		{"cuStreamSynchronize", 1, ResultIllegalAddress, digests, sealer.ErrDeviceLost},
		{"cuMemcpyDtoHAsync_v2", 1, ResultUnknown, digests, ResultUnknown},
		{"cuMemcpyDtoDAsync_v2", 2, ResultUnknown, func(e env) error { _, err := e.d.MeasureCopyBandwidth(ctx, 8192, 3); return err }, ResultUnknown},
	} {
		t.Run(fmt.Sprintf("%s/%d/%s", c.fn, c.nth, c.code.Name()), func(t *testing.T) {
			f := newFake(t, fakeFull)
			devs, err := Open(ctx, Options{LibraryPath: f.path, Workers: 1, StagingBytes: 4096})
			if err != nil {
				t.Fatal(err)
			}
			d := devs[0]
			a, err := d.Alloc(ctx, 20000)
			if err != nil {
				t.Fatal(err)
			}
			f.failNext(t, c.fn, c.code, c.nth)
			err = c.op(env{d, a})
			if err == nil {
				t.Fatal("no error")
			}
			var ce *CallError
			if !errors.As(err, &ce) || !strings.HasPrefix(ce.Func, c.fn) || ce.Result != c.code {
				t.Errorf("error %q: want a CallError of %s with %s", err, c.fn, c.code.Name())
			}
			if !errors.Is(err, c.is) || !strings.Contains(err.Error(), "GPU 0") {
				t.Errorf("error %q: want it to wrap %v and name the GPU", err, c.is)
			}
			// The device still works after a failed operation (the fake's
			// errors are not sticky).
			freeing := strings.HasPrefix(c.fn, "cuMemUnmap") || strings.HasPrefix(c.fn, "cuMemAddressFree") || strings.HasPrefix(c.fn, "cuMemRelease")
			if !freeing {
				if err := d.Write(ctx, a, 0, make([]byte, 20000)); err != nil {
					t.Errorf("write after the failure: %v", err)
				}
				d.Free(ctx, a)
			}
			if err := d.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if !freeing {
				f.expectClean(t)
			}
		})
	}
}

func TestLeafDigests(t *testing.T) {
	f := newFake(t, fakeFull)
	ctx := context.Background()
	d := open(t, f, func(o *Options) { o.launchBytes = 3 * 4096 })[0]
	for _, c := range []struct{ n, leaf uint64 }{
		{1, 4096}, {55, 4096}, {56, 4096}, {64, 4096}, {4095, 4096}, {4096, 4096}, {4097, 4096},
		{10*4096 + 1000, 4096}, {100000, 8192}, {1 << 20, 1 << 16},
	} {
		a, _, _ := checkLeafDigests(ctx, t, d, c.n, c.n+100, c.leaf) // the allocation may be larger than the shard
		d.Free(ctx, a)
	}
	if !strings.Contains(d.KernelInfo(), "bytes of PTX") {
		t.Errorf("KernelInfo() = %q: want the JIT's information log", d.KernelInfo())
	}
	if got := f.get("calls:cuModuleLoadDataEx"); got != 1 {
		t.Errorf("kernel loaded %d times, want once", got)
	}
	if launches := f.get("launches"); launches < 5 {
		t.Errorf("%d launches: the launch window was not applied", launches)
	}
	a, _ := d.Alloc(ctx, 100)
	if _, err := d.LeafDigests(ctx, a, 100, 1000); err == nil {
		t.Error("bad leaf size: no error")
	}
	if _, err := d.LeafDigests(ctx, a, 101, 4096); err == nil {
		t.Error("n beyond the allocation: no error")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.LeafDigests(cctx, a, 100, 4096); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
}

func TestAllocationMemory(t *testing.T) {
	f := newFake(t, fakeFull)
	d := open(t, f)[0]
	ctx := context.Background()
	a, err := d.Alloc(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		memtype, managed int64
		want             sealer.AllocationMemory
	}{
		{2, 0, sealer.AllocationMemory{Type: "device"}},
		{2, 1, sealer.AllocationMemory{Type: "device", Managed: true}},
		{1, 0, sealer.AllocationMemory{Type: "host"}},
		{4, 1, sealer.AllocationMemory{Type: "unified", Managed: true}},
		{9, 0, sealer.AllocationMemory{Type: "unknown (9)"}},
	} {
		f.set("memtype", c.memtype)
		f.set("managed", c.managed)
		got, err := d.AllocationMemory(ctx, a)
		if err != nil || got != c.want {
			t.Errorf("memtype %d managed %d: got %+v, %v", c.memtype, c.managed, got, err)
		}
	}
	if MemoryDevice.String() != sealer.MemoryDevice {
		t.Error("MemoryType names")
	}
}

func TestClose(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("devices", 2)
	ctx := context.Background()
	devs, err := Open(ctx, Options{LibraryPath: f.path})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := devs[0].Alloc(ctx, 4096)
	if _, err := devs[0].LeafDigests(ctx, a, 4096, 4096); err != nil {
		t.Fatal(err)
	}
	if err := devs[0].Free(ctx, a); err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
	if _, err := devs[0].MemoryInfo(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("MemoryInfo after Close: %v", err)
	}
	f.expectClean(t)
}

func TestMeasureCopyBandwidth(t *testing.T) {
	f := newFake(t, fakeFull)
	d := open(t, f)[0]
	bw, err := d.MeasureCopyBandwidth(context.Background(), 1<<20, 3)
	if err != nil || bw <= 0 {
		t.Fatalf("bandwidth %v, %v", bw, err)
	}
	if n := f.get("calls:cuMemcpyDtoDAsync_v2"); n != 4 {
		t.Errorf("%d device copies, want 1 warm-up and 3 timed", n)
	}
	if bw, err := d.MeasureReadBandwidth(context.Background(), 100000, 2); err != nil || bw <= 0 {
		t.Errorf("read bandwidth %v, %v", bw, err)
	}
	if n := f.get("calls:cuMemcpyDtoHAsync_v2"); n != 2*25 {
		t.Errorf("%d device-to-host copies, want 2 × 25 chunks of 4096 bytes", n)
	}
	if _, err := d.MeasureCopyBandwidth(context.Background(), 0, 1); err == nil {
		t.Error("zero size: no error")
	}
}

func TestResult(t *testing.T) {
	if got := ResultOutOfMemory.Error(); got != "CUDA_ERROR_OUT_OF_MEMORY (2): out of memory" {
		t.Errorf("got %q", got)
	}
	if got := Result(12345).Error(); !strings.Contains(got, "12345") {
		t.Errorf("unknown code: %q", got)
	}
	if Result(12345).Name() != "CUDA_ERROR_12345" || ResultIllegalAddress.Name() != "CUDA_ERROR_ILLEGAL_ADDRESS" {
		t.Error("names")
	}
	err := fmt.Errorf("x: %w", &CallError{Func: "cuMemAlloc_v2", Result: ResultOutOfMemory})
	if !errors.Is(err, sealer.ErrOutOfMemory) || errors.Is(err, sealer.ErrDeviceLost) {
		t.Error("out of memory maps onto sealer.ErrOutOfMemory only")
	}
	if !errors.Is(ResultLaunchFailed, sealer.ErrDeviceLost) || errors.Is(ResultInvalidValue, sealer.ErrDeviceLost) {
		t.Error("sticky errors map onto sealer.ErrDeviceLost")
	}
	if FormatUUID([16]byte{0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}) != "GPU-deadbeef-0102-0304-0506-0708090a0b0c" {
		t.Error("FormatUUID")
	}
}

// TestEmbeddedPTXIsFresh fails when sha256_leaves.ptx is not what the
// generator writes now: run `make generate-ptx`.
func TestEmbeddedPTXIsFresh(t *testing.T) {
	want, err := ptxgen.LeafPTX()
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := os.ReadFile("sha256_leaves.ptx")
	if err != nil {
		t.Fatal(err)
	}
	if leafPTX != want || string(onDisk) != want {
		t.Fatal("sha256_leaves.ptx is stale: run `make generate-ptx` and commit the result")
	}
	if !strings.Contains(want, ".visible .entry "+kernelName+"(") {
		t.Errorf("the PTX lacks the entry %s", kernelName)
	}
}

func TestCloseErrors(t *testing.T) {
	for _, fn := range []string{"cuModuleUnload", "cuDevicePrimaryCtxRelease_v2"} {
		t.Run(fn, func(t *testing.T) {
			f := newFake(t, fakeFull)
			ctx := context.Background()
			devs, err := Open(ctx, Options{LibraryPath: f.path, Workers: 1})
			if err != nil {
				t.Fatal(err)
			}
			if err := devs[0].PrepareKernel(ctx); err != nil {
				t.Fatal(err)
			}
			f.failNext(t, fn, ResultInvalidContext, 1)
			err = devs[0].Close()
			if err == nil || !strings.Contains(err.Error(), fn) {
				t.Errorf("Close with %s failing: %v", fn, err)
			}
			if v := f.get("streams") + f.get("host_allocs"); v != 0 {
				t.Errorf("workers' resources not freed: %d", v)
			}
		})
	}
}

func TestCancelledOperations(t *testing.T) {
	f := newFake(t, fakeFull)
	d := open(t, f)[0]
	ctx, cancel := context.WithCancel(context.Background())
	a, err := d.Alloc(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := d.Write(ctx, a, 0, make([]byte, 1<<20)); !errors.Is(err, context.Canceled) {
		t.Errorf("Write with a cancelled context: %v", err)
	}
	if err := d.Read(ctx, a, 0, make([]byte, 1<<20)); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with a cancelled context: %v", err)
	}
	// Free goes through regardless: memory is never left behind.
	if err := d.Free(ctx, a); err != nil {
		t.Errorf("Free with a cancelled context: %v", err)
	}
	if f.get("dev_allocs") != 0 {
		t.Error("allocation not freed")
	}
}

// TestJITErrorLog: a module the JIT refuses fails with the compiler's
// error log in the error.
func TestJITErrorLog(t *testing.T) {
	f := newFake(t, fakeFull)
	d := open(t, f)[0]
	err := d.do(context.Background(), func(w *worker) error {
		_, _, err := w.loadModule("this is not PTX")
		return err
	})
	if !errors.Is(err, ResultInvalidPTX) || !strings.Contains(err.Error(), "not a PTX module") {
		t.Errorf("got %v: want CUDA_ERROR_INVALID_PTX with the JIT's error log", err)
	}
	if f.get("modules") != 0 {
		t.Error("a module was left loaded")
	}
}

// TestDeviceOrderReachesTheDriver: CUDA_DEVICE_ORDER set by the process
// itself (as the agent does when it is unset, before it opens the driver)
// is what the driver reads at cuInit, with and without cgo, so CUDA
// ordinals follow PCI bus order as NVML's indexes do.
func TestDeviceOrderReachesTheDriver(t *testing.T) {
	t.Setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
	f := newFake(t, fakeFull)
	if got := f.get("init_device_order"); got != -2 {
		t.Fatalf("init_device_order before cuInit = %d, want -2", got)
	}
	open(t, f)
	if got := f.get("init_device_order"); got != 1 {
		t.Fatalf("CUDA_DEVICE_ORDER seen by cuInit: code %d, want 1 (PCI_BUS_ID)", got)
	}
}
