package policy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ebitengine/purego"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// fakeDriver builds sealer/cuda's fake libcuda into t.TempDir() and returns
// its path and its setting function.
func fakeDriver(t *testing.T) (string, func(key string, v int64)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "libcuda.so.1")
	out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", path,
		filepath.Join("..", "sealer", "cuda", "testdata", "fakecuda.c"), "-lpthread").CombinedOutput()
	if err != nil {
		t.Fatalf("building the fake driver with gcc: %v\n%s", err, out)
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { purego.Dlclose(h) })
	var set func(string, int64)
	purego.RegisterLibFunc(&set, h, "fakecuda_set")
	return path, set
}

// TestCUDAGPUs runs the policy against CUDA devices on the fake driver:
// the properties the driver reports and the pointer attributes of a sealed
// allocation.
func TestCUDAGPUs(t *testing.T) {
	path, set := fakeDriver(t)
	set("devices", 2)
	ctx := context.Background()
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: path, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	rec := &audit.Recorder{}
	p, err := New(strict, Deps{GPUs: GPUsOf(devs), Emitter: rec, WorkerID: "node-a", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	// The fake reports compute 9.0, ECC on, 1 GiB, discrete: compliant.
	if err := p.CheckStartup(ctx, nil); err != nil || len(rec.Events()) != 0 {
		t.Fatalf("compliant fake GPUs: %v, %d events", err, len(rec.Events()))
	}
	signer, _ := sealer.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	s, err := sealer.New(sealer.Config{WorkerID: "node-a", Devices: []sealer.Device{devs[0], devs[1]}, Signer: signer,
		Emitter: rec, Admission: p, AllocationChecker: p})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "shard")
	os.WriteFile(file, make([]byte, 100000), 0o600)
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "a", Path: file, GPU: 0}); err != nil {
		t.Fatalf("seal into device memory: %v", err)
	}
	set("managed", 1)
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "b", Path: file, GPU: 1}); sealer.KindOf(err) != sealer.KindPolicy {
		t.Fatalf("seal into managed memory: %v", err)
	}
	evs := violations(rec)
	if len(evs) != 1 || evs[0].Violation != audit.ViolationNonDeviceMemory || evs[0].GPUDevice != 1 {
		t.Fatalf("events %+v", evs)
	}
	if c := p.Compliant(); !c[0] || c[1] {
		t.Errorf("Compliant() = %v", c)
	}
	set("managed", 0)
	set("memtype", 1) // host memory
	if err := p.CheckAllocation(ctx, devs[0], mustAlloc(t, devs[0])); err == nil {
		t.Error("host memory accepted")
	}

	// A second policy sees an integrated, old GPU without ECC.
	set("integrated", 1)
	set("major", 5)
	set("ecc", 0)
	set("mig", 1)
	set("version", 12080) // a MIG instance shows through the driver API before CUDA 13 only
	rec2 := &audit.Recorder{}
	// Properties are read at Open: reopen to see the new ones.
	devs2, err := cuda.Open(ctx, cuda.Options{LibraryPath: path, Workers: 1, Devices: []int{0}})
	if err != nil {
		t.Fatal(err)
	}
	defer devs2[0].Close()
	p2, _ := New(strict, Deps{GPUs: GPUsOf(devs2), Emitter: rec2, Logger: quiet()})
	p2.CheckStartup(ctx, nil)
	var got []string
	for _, ev := range violations(rec2) {
		got = append(got, ev.Violation)
	}
	if len(got) != 4 || got[0] != audit.ViolationIntegratedGPU || got[1] != audit.ViolationComputeCapabilityTooLow ||
		got[2] != audit.ViolationECCDisabled || got[3] != audit.ViolationMIGEnabled {
		t.Errorf("violations %v", got)
	}
}

func mustAlloc(t *testing.T, d *cuda.Device) sealer.Allocation {
	t.Helper()
	a, err := d.Alloc(context.Background(), 4096)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(context.Background(), a) })
	return a
}
