package main

import (
	"context"
	"runtime/debug"
	"testing"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

func TestMemoryLimit(t *testing.T) {
	ctx := context.Background()
	noEnv := func(string) string { return "" }
	cfg := config.Default()
	cfg.Device = config.DeviceSim
	cfg.Sim.GPUs, cfg.Sim.MemoryBytes = 2, 64<<20
	devs, err := simgpu.New(simgpu.Config{GPUs: 2, MemoryBytes: 64 << 20})
	if err != nil {
		t.Fatal(err)
	}
	// Default: the base and twice the leaf digests of 128 MiB at 256 KiB
	// leaves (512 leaves); the simulated memory lives in memfds, outside
	// the heap.
	want := int64(baseMemoryLimit + 2*512*32)
	if got := memoryLimit(ctx, &cfg, simgpu.Devices(devs), noEnv); got != want {
		t.Fatalf("default limit %d, want %d", got, want)
	}
	if got := memoryLimit(ctx, &cfg, simgpu.Devices(devs), func(k string) string { return map[string]string{"GOMEMLIMIT": "1GiB"}[k] }); got != -1 {
		t.Fatalf("with GOMEMLIMIT: %d, want -1 (kept)", got)
	}
	cfg.MemoryLimitBytes = 300 << 20
	if got := memoryLimit(ctx, &cfg, []sealer.Device{}, noEnv); got != 300<<20 {
		t.Fatalf("configured limit %d", got)
	}
}

func TestGCPercent(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	if got := applyGCPercent(func(k string) string { return map[string]string{"GOGC": "200"}[k] }); got != "200" {
		t.Fatalf("with GOGC set: %q", got)
	}
	if debug.SetGCPercent(100) != 100 {
		t.Fatal("GOGC set in the environment, yet the agent changed it")
	}
	applyGCPercent(func(string) string { return "" })
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("GC percent %d, want %d", got, defaultGCPercent)
	}
}
