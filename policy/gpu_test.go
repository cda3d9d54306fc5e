package policy

import (
	"context"
	"os"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// TestGPUPolicy checks the real GPUs of this machine against the default
// policy and a real allocation's pointer attributes. It skips without a
// driver (VRAMSEAL_REQUIRE_GPU=1, set by make gpu-check, makes that fail).
func TestGPUPolicy(t *testing.T) {
	ctx := context.Background()
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: os.Getenv("VRAMSEAL_CUDA_LIBRARY")})
	if err != nil {
		if os.Getenv("VRAMSEAL_REQUIRE_GPU") == "1" {
			t.Fatalf("VRAMSEAL_REQUIRE_GPU=1 but no GPU: %v", err)
		}
		testenv.NoGPU(t, err)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	rec := &audit.Recorder{}
	p, err := New(Config{MinMemoryBytes: 1 << 30, MinComputeCapability: "6.0"}, Deps{GPUs: GPUsOf(devs), Emitter: rec, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.CheckStartup(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, d := range devs {
		t.Logf("GPU %d: %+v, compliant: %v", d.Index(), d.StaticProperties(), p.Compliant()[d.Index()])
	}
	for _, v := range p.Violations() {
		t.Logf("violation: %v", v)
	}
	a, err := devs[0].Alloc(ctx, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer devs[0].Free(ctx, a)
	if p.Compliant()[0] {
		if err := p.CheckAllocation(ctx, devs[0], a); err != nil {
			t.Errorf("a cuMemAlloc allocation failed the policy: %v", err)
		}
	}
}
