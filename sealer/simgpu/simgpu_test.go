package simgpu

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

func TestCapacityAndIndependence(t *testing.T) {
	ctx := context.Background()
	devs, err := New(Config{GPUs: 2, MemoryBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	a, err := devs[0].Alloc(ctx, 700<<10)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := devs[0].Alloc(ctx, 400<<10); !errors.Is(err, sealer.ErrOutOfMemory) {
		t.Fatalf("over capacity: %v", err)
	}
	// The other GPU has its own memory.
	b, err := devs[1].Alloc(ctx, 700<<10)
	if err != nil {
		t.Fatal(err)
	}
	_ = devs[0].Write(ctx, a, 0, []byte("hello"))
	_ = devs[1].Write(ctx, b, 0, []byte("world"))
	got := make([]byte, 5)
	_ = devs[0].Read(ctx, a, 0, got)
	if string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	// An allocation of one device is refused by another.
	if err := devs[1].Read(ctx, a, 0, got); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Fatalf("cross-device read: %v", err)
	}
	if err := devs[0].Read(ctx, a, 700<<10-2, got); err == nil {
		t.Fatal("read past the end")
	}
	info, _ := devs[0].MemoryInfo(ctx)
	if info.Total != 1<<20 || info.Free != 1<<20-700<<10 {
		t.Fatalf("memory info %+v", info)
	}
	if err := devs[0].Free(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := devs[0].Free(ctx, a); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Fatalf("double free: %v", err)
	}
	if info, _ := devs[0].MemoryInfo(ctx); info.Free != 1<<20 {
		t.Fatalf("after free %+v", info)
	}
	// Two allocations never share memory.
	x, _ := devs[0].Alloc(ctx, 16)
	y, _ := devs[0].Alloc(ctx, 16)
	_ = devs[0].Write(ctx, x, 0, bytes.Repeat([]byte{1}, 16))
	_ = devs[0].Write(ctx, y, 0, bytes.Repeat([]byte{2}, 16))
	_ = devs[0].Read(ctx, x, 0, got)
	if got[0] != 1 {
		t.Fatal("allocations overlap")
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	devs, _ := New(Config{GPUs: 1, MemoryBytes: 1 << 20})
	d := devs[0]
	a, _ := d.Alloc(ctx, 8192)
	_ = d.Write(ctx, a, 0, make([]byte, 8192))
	if err := d.FlipBit(ctx, a, 8191, 7); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	_ = d.Read(ctx, a, 8191, b)
	if b[0] != 0x80 {
		t.Fatalf("flipped byte %#x", b[0])
	}
	if err := d.FlipBit(ctx, a, 8192, 0); err == nil {
		t.Fatal("flip past the end")
	}
	d.SetFailReads(true)
	if err := d.Read(ctx, a, 0, b); err == nil {
		t.Fatal("read did not fail")
	}
	if _, err := d.LeafDigests(ctx, a, 8192, 4096); err == nil {
		t.Fatal("device digest did not fail")
	}
	d.SetFailReads(false)
	d.FailNextAlloc(errors.New("boom"))
	if _, err := d.Alloc(ctx, 1); err == nil {
		t.Fatal("injected allocation failure missing")
	}
	if _, err := d.Alloc(ctx, 1); err != nil {
		t.Fatal("the failure must apply once")
	}
	d.AddECC(2, 1)
	if tel := d.Telemetry(); tel.ECCCorrected != 2 || tel.ECCUncorrected != 1 || tel.Name != Name || tel.UUID == "" {
		t.Fatalf("telemetry %+v", tel)
	}
	d.SetLost(true)
	if _, err := d.MemoryInfo(ctx); !errors.Is(err, sealer.ErrDeviceLost) {
		t.Fatalf("lost: %v", err)
	}
	if err := d.Read(ctx, a, 0, b); !errors.Is(err, sealer.ErrDeviceLost) {
		t.Fatalf("lost read: %v", err)
	}
	d.SetLost(false)
	if err := d.Read(ctx, a, 0, b); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Fatalf("after reset: %v", err)
	}
	if tel := d.Telemetry(); tel.UsedBytes != 0 {
		t.Fatalf("after reset used %d", tel.UsedBytes)
	}
}

func TestLeafDigestsMatchHost(t *testing.T) {
	ctx := context.Background()
	devs, _ := New(Config{GPUs: 1, MemoryBytes: 1 << 20})
	data := make([]byte, 5*4096+7)
	for i := range data {
		data[i] = byte(i * 13)
	}
	a, _ := devs[0].Alloc(ctx, uint64(len(data)))
	_ = devs[0].Write(ctx, a, 0, data)
	got, err := devs[0].LeafDigests(ctx, a, uint64(len(data)), 4096)
	if err != nil {
		t.Fatal(err)
	}
	want := sealer.HashLeaves(data, 4096, 1)
	if len(got) != len(want) {
		t.Fatalf("%d leaves, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("leaf %d differs", i)
		}
	}
}

func TestNewRejects(t *testing.T) {
	for _, c := range []Config{{GPUs: 0, MemoryBytes: 1 << 30}, {GPUs: 65, MemoryBytes: 1 << 30}, {GPUs: 1, MemoryBytes: 10}} {
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestAllocationPrintsNoAddress(t *testing.T) {
	devs, _ := New(Config{GPUs: 1, MemoryBytes: 1 << 20})
	a, _ := devs[0].Alloc(context.Background(), 10)
	for _, s := range []string{fmtV(a), fmtGoV(a)} {
		if bytes.Contains([]byte(s), []byte("0x")) {
			t.Fatalf("allocation formats as %q", s)
		}
	}
}

func TestPropertiesAndAllocationMemory(t *testing.T) {
	ctx := context.Background()
	per := DefaultProperties()
	per.ECCEnabled = false
	ds, err := New(Config{GPUs: 2, MemoryBytes: 1 << 30, Properties: DefaultProperties(),
		PerGPU: map[int]sealer.GPUProperties{1: per}, ManagedMemory: map[int]bool{1: true}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := ds[1].Properties(ctx)
	if err != nil || p.Index != 1 || p.Name != Name || p.UUID != ds[1].UUID() || p.TotalMemory != 1<<30 || p.ECCEnabled ||
		p.Compute != (sealer.ComputeCapability{Major: 9}) || p.MIG != sealer.MIGDisabled {
		t.Errorf("GPU 1 properties %+v, %v", p, err)
	}
	a, err := ds[1].Alloc(ctx, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ds[1].AllocationMemory(ctx, a); err != nil || m != (sealer.AllocationMemory{Type: "unified", Managed: true}) {
		t.Errorf("managed GPU: %+v, %v", m, err)
	}
	ds[1].SetManagedMemory(false)
	if m, err := ds[1].AllocationMemory(ctx, a); err != nil || m != (sealer.AllocationMemory{Type: sealer.MemoryDevice}) {
		t.Errorf("after SetManagedMemory(false): %+v, %v", m, err)
	}
	ds[0].SetLost(true)
	if _, err := ds[0].Properties(ctx); !errors.Is(err, sealer.ErrDeviceLost) {
		t.Errorf("a lost GPU answered: %v", err)
	}
}
