package cuda

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

// TestVMMShards: a shard is a VMM allocation (create, reserve, map, set
// access), reported as device memory on its mapped pointer, readable and
// writable as before, and freed in reverse order.
func TestVMMShards(t *testing.T) {
	f := newFake(t, fakeFull)
	d := open(t, f)[0]
	ctx := context.Background()
	if d.Granularity() != 65536 || strings.Contains(strings.Join(d.Limitations(), "\n"), "handed") {
		t.Fatalf("granularity %d, limitations %q", d.Granularity(), d.Limitations())
	}
	a, err := d.Alloc(ctx, 100000)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"cuMemCreate", "cuMemAddressReserve", "cuMemMap", "cuMemSetAccess"} {
		if n := f.get("calls:" + fn); n != 1 {
			t.Errorf("%s called %d times, want 1", fn, n)
		}
	}
	if f.get("calls:cuMemAlloc_v2") != 0 || f.get("vmm_bytes") != 131072 {
		t.Errorf("cuMemAlloc calls %d, VMM bytes %d: want a VMM allocation of 2 granules", f.get("calls:cuMemAlloc_v2"), f.get("vmm_bytes"))
	}
	if m, err := d.AllocationMemory(ctx, a); err != nil || m != (sealer.AllocationMemory{Type: "device"}) {
		t.Errorf("memory of the mapped pointer: %+v, %v", m, err)
	}
	data := randomBytes(t, 100000)
	if err := d.Write(ctx, a, 0, data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := d.Read(ctx, a, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	leaves, err := d.LeafDigests(ctx, a, 100000, 4096)
	if err != nil || len(leaves) != 25 || leaves[0] != sealer.HashLeaves(data, 4096, 1)[0] {
		t.Fatalf("leaf digests on a VMM shard: %d, %v", len(leaves), err)
	}
	// Unmap comes first: when it fails, nothing else is torn down.
	f.failNext(t, "cuMemUnmap", ResultInvalidValue, 1)
	if err := d.Free(ctx, a); !errors.Is(err, ResultInvalidValue) || f.get("calls:cuMemAddressFree")+f.get("calls:cuMemRelease") != 0 {
		t.Errorf("Free with cuMemUnmap failing: %v; address freed/handle released %d times", err, f.get("calls:cuMemAddressFree")+f.get("calls:cuMemRelease"))
	}
	b, _ := d.Alloc(ctx, 1)
	if err := d.Free(ctx, b); err != nil {
		t.Fatal(err)
	}
	if f.get("calls:cuMemAddressFree") != 1 || f.get("calls:cuMemRelease") != 1 {
		t.Error("Free did not free the address range and release the handle")
	}
}

// TestVMMExportImport: an exported shard imported through a second copy
// of the driver (as another process loads its own) shares the memory: a
// change made by the agent is seen through the import, which was mapped
// read-only, and the memory outlives the agent's Free while imported.
func TestVMMExportImport(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := open(t, f)[0]
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	a, err := agent.Alloc(ctx, 70000)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 70000)
	if err := agent.Write(ctx, a, 0, data); err != nil {
		t.Fatal(err)
	}
	x, err := agent.Export(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if x.Kind != sealer.MemoryCUDAVMM || x.MappedSize != 131072 || x.GPUUUID != agent.StaticProperties().UUID {
		t.Errorf("exported %+v", x)
	}
	imp, err := engine.Adopt(ctx, x.File, 70000)
	x.File.Close()
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 70000)
	if err := engine.Read(ctx, imp, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the import: %v, equal %v", err, bytes.Equal(got, data))
	}
	if al := imp.(*allocation); al.vmm.access != AccessRead {
		t.Errorf("import access %d, want read-only", al.vmm.access)
	}
	if err := engine.Write(ctx, imp, 0, []byte{1}); err == nil {
		t.Error("a write into attached memory was not refused")
	}
	if err := agent.Write(ctx, a, 5, []byte{^data[5]}); err != nil {
		t.Fatal(err)
	}
	if err := engine.Read(ctx, imp, 0, got); err != nil || got[5] != ^data[5] {
		t.Error("a change by the agent is not seen through the import")
	}
	// The agent frees its allocation: the importer's mapping still holds the memory.
	if err := agent.Free(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := engine.Read(ctx, imp, 0, got); err != nil || got[0] != data[0] {
		t.Errorf("read after the exporter freed: %v", err)
	}
	if err := engine.Free(ctx, imp); err != nil {
		t.Fatal(err)
	}
	if _, err := agent.Export(ctx, a); !errors.Is(err, sealer.ErrAllocationMissing) {
		t.Errorf("export after Free: %v", err)
	}
	f.expectNoVMM(t)
	g.expectNoVMM(t)
}

// TestVMMReadOnlyRefused: a driver that refuses read-only access gets a
// read-write mapping of the import instead.
func TestVMMReadOnlyRefused(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := open(t, f)[0]
	g := newFake(t, fakeFull)
	g.set("refuse_read_only", 1)
	engine := open(t, g)[0]
	a, _ := agent.Alloc(ctx, 10)
	x, err := agent.Export(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer x.File.Close()
	imp, err := engine.Adopt(ctx, x.File, 10)
	if err != nil {
		t.Fatal(err)
	}
	if al := imp.(*allocation); al.vmm.access != AccessReadWrite || g.get("calls:cuMemSetAccess") != 2 {
		t.Errorf("access %d after %d cuMemSetAccess calls: want the read-write fallback", al.vmm.access, g.get("calls:cuMemSetAccess"))
	}
	if err := engine.Free(ctx, imp); err != nil {
		t.Fatal(err)
	}
	agent.Free(ctx, a)
}

// TestVMMImportErrors: a failure at each step of an import is returned,
// named, and leaves nothing mapped or reserved.
func TestVMMImportErrors(t *testing.T) {
	ctx := context.Background()
	for _, fn := range []string{"cuMemImportFromShareableHandle", "cuMemAddressReserve", "cuMemMap", "cuMemSetAccess"} {
		t.Run(fn, func(t *testing.T) {
			f := newFake(t, fakeFull)
			agent := open(t, f)[0]
			g := newFake(t, fakeFull)
			engine := open(t, g)[0]
			a, _ := agent.Alloc(ctx, 10)
			x, err := agent.Export(ctx, a)
			if err != nil {
				t.Fatal(err)
			}
			defer x.File.Close()
			g.failNext(t, fn, ResultInvalidValue, 1)
			if fn != "cuMemImportFromShareableHandle" { // both the read-only and the read-write mapping
				g.failNext(t, fn, ResultInvalidValue, 1)
			}
			if _, err := engine.Adopt(ctx, x.File, 10); !errors.Is(err, ResultInvalidValue) || !strings.Contains(err.Error(), fn) {
				t.Errorf("import with %s failing: %v", fn, err)
			}
			g.expectNoVMM(t)
			agent.Free(ctx, a)
		})
	}
}

// TestNoVMM: a GPU without VMM support holds shards in plain allocations,
// says so, and refuses to export or attach.
func TestNoVMM(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	f.set("vmm", 0)
	d := open(t, f)[0]
	if d.Granularity() != 0 || !strings.Contains(strings.Join(d.Limitations(), "\n"), "cannot be handed") {
		t.Errorf("limitations %q", d.Limitations())
	}
	a, err := d.Alloc(ctx, 10)
	if err != nil || f.get("calls:cuMemAlloc_v2") != 1 {
		t.Fatalf("plain allocation: %v", err)
	}
	if _, err := d.Export(ctx, a); err == nil || !strings.Contains(err.Error(), "plain allocation") {
		t.Errorf("export of a plain allocation: %v", err)
	}
	if _, err := d.Adopt(ctx, nil, 10); err == nil {
		t.Error("attach without VMM: no error")
	}
	d.Free(ctx, a)
	if f.get("dev_allocs") != 0 {
		t.Error("plain allocation not freed")
	}
	// A granularity the driver cannot report: the same, saying why.
	g := newFake(t, fakeFull)
	g.failNext(t, "cuMemGetAllocationGranularity", ResultNotSupported, 1)
	if e := open(t, g)[0]; e.Granularity() != 0 || !strings.Contains(strings.Join(e.Limitations(), "\n"), "CUDA_ERROR_NOT_SUPPORTED") {
		t.Errorf("granularity refused: %d, %q", e.Granularity(), e.Limitations())
	}
}

// TestCloseFreesVMM: Close frees the VMM allocations and IPC segments still
// live, which the context's release would not.
func TestCloseFreesVMM(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	devs, err := Open(ctx, Options{LibraryPath: f.path, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	_, h := engineSegment(t, g, engine, 10000)
	if _, err := devs[0].Alloc(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if _, err := devs[0].AdoptIPC(ctx, h, 0, 100); err != nil {
		t.Fatal(err)
	}
	if err := devs[0].Close(); err != nil {
		t.Fatal(err)
	}
	f.expectClean(t)
}
