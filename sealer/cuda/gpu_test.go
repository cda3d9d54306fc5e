package cuda

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer"
)

// openGPU opens the real driver's first GPU (VRAMSEAL_CUDA_LIBRARY, which
// `make gpu-check` sets to the file it found, or the agent's own search),
// or skips the test when this machine has none. With VRAMSEAL_REQUIRE_GPU=1
// (set by `make gpu-check`) a missing driver fails the test instead.
func openGPU(t *testing.T) *Device {
	t.Helper()
	lib := os.Getenv("VRAMSEAL_CUDA_LIBRARY")
	devs, err := Open(context.Background(), Options{LibraryPath: lib, Devices: []int{0}})
	if err != nil {
		if os.Getenv("VRAMSEAL_REQUIRE_GPU") == "1" {
			t.Fatalf("VRAMSEAL_REQUIRE_GPU=1 but no GPU: %v", err)
		}
		testenv.NoGPU(t, err)
	}
	t.Cleanup(func() { devs[0].Close() })
	return devs[0]
}

func TestGPUProperties(t *testing.T) {
	d := openGPU(t)
	p, err := d.Properties(context.Background())
	t.Logf("GPU 0: %+v, driver %d (%v)", p, d.DriverVersion(), err)
	if err != nil || p.Name == "" || len(p.UUID) != 40 || p.Compute.Major < 1 || p.TotalMemory == 0 || d.DriverVersion() < 12000 {
		t.Errorf("implausible properties %+v", p)
	}
	if err := d.PrepareKernel(context.Background()); err != nil {
		t.Fatalf("the driver cannot load the leaf kernel: %v", err)
	}
	t.Logf("leaf kernel JIT log: %s", d.KernelInfo())
}

func TestGPUWriteReadAndMemory(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	data := randomBytes(t, 64<<20+12345)
	a, err := d.Alloc(ctx, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(ctx, a)
	if err := d.Write(ctx, a, 0, data); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := d.Read(ctx, a, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip through VRAM: %v", err)
	}
	mem, err := d.AllocationMemory(ctx, a)
	if err != nil || mem != (sealer.AllocationMemory{Type: sealer.MemoryDevice}) {
		t.Errorf("allocation memory %+v, %v: want plain device memory", mem, err)
	}
	info, err := d.MemoryInfo(ctx)
	if err != nil || info.Free >= info.Total {
		t.Errorf("memory info %+v, %v", info, err)
	}
}

// TestGPULeafDigestsMatchCPU runs the PTX kernel on the GPU over shards of
// awkward sizes and leaf sizes and compares every leaf digest with the CPU,
// then changes one byte in VRAM and expects exactly that leaf to differ.
// With -test.short (make gpu-check runs it so under compute-sanitizer,
// which slows the kernel a hundredfold) only the shards up to 1 MiB.
func TestGPULeafDigestsMatchCPU(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	for _, c := range []struct{ n, leaf uint64 }{
		{1, 4096}, {55, 4096}, {56, 4096}, {63, 4096}, {64, 4096}, {119, 4096}, {120, 4096},
		{4095, 4096}, {4096, 4096}, {4097, 4096}, {7*4096 + 5, 4096}, {1<<20 + 3, 16 << 10},
		{64<<20 + 777, 16 << 10}, {64 << 20, 256 << 10}, {40<<20 + 1, 16 << 20},
	} {
		if testing.Short() && c.n > 1<<20+3 {
			continue
		}
		a, data, want := checkLeafDigests(ctx, t, d, c.n, c.n, c.leaf)
		off := c.n / 2
		if err := d.Write(ctx, a, off, []byte{data[off] ^ 0x10}); err != nil {
			t.Fatal(err)
		}
		got, err := d.LeafDigests(ctx, a, c.n, c.leaf)
		if err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if differs := got[i] != want[i]; differs != (uint64(i) == off/c.leaf) {
				t.Fatalf("n=%d L=%d: after changing byte %d, leaf %d differs=%v", c.n, c.leaf, off, i, differs)
			}
		}
		d.Free(ctx, a)
	}
}

func TestGPUSealVerify(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(path, randomBytes(t, 96<<20+5), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, _ := sealer.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	s, err := sealer.New(sealer.Config{WorkerID: "gpu-check", Devices: []sealer.Device{d}, Signer: signer,
		Emitter: &audit.Recorder{}, LeafSize: 16 << 10, VerifyMode: sealer.VerifyDevice})
	if err != nil {
		t.Fatal(err)
	}
	seal, err := s.Seal(ctx, sealer.SealRequest{ID: "gpu-check-shard", Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if res, err := s.Verify(ctx, seal.ShardID); err != nil || !res.Intact() {
		t.Fatalf("GPU verification: %+v, %v", res, err)
	}
	if _, err := s.Release(ctx, seal.ShardID); err != nil {
		t.Fatal(err)
	}
}

// TestGPUTreeDigests runs the pipelined verification on the GPU over
// shards of several sizes and leaf sizes and compares each root with the
// CPU's, twice, so the second pass runs on reused buffers.
func TestGPUTreeDigests(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	var shards []sealedShard
	for _, leaf := range []uint64{4096, 16 << 10, 256 << 10} {
		shards = append(shards, writeShards(t, d, []uint64{1, 4097, 64<<20 + 999, 32 << 20}, leaf)...)
	}
	for pass := range 2 {
		res, err := d.TreeDigests(ctx, requests(shards))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || sealer.FormatDigest(r.Root) != shards[i].want.Digest {
				t.Fatalf("pass %d shard %d (L=%d, %d bytes): %v", pass, i, shards[i].req.LeafSize, shards[i].req.Size, r.Err)
			}
		}
	}
}

// TestGPUVMMExportAdopt: on a real GPU a shard is a VMM allocation that
// exports as a POSIX descriptor; imported again (as attach does) it reads
// the same bytes, and the access flag the driver granted is logged.
func TestGPUVMMExportAdopt(t *testing.T) {
	d := openGPU(t)
	ctx := context.Background()
	if d.Granularity() == 0 {
		t.Fatalf("no VMM on this GPU: %q", d.Limitations())
	}
	data := randomBytes(t, 4<<20+77)
	a, err := d.Alloc(ctx, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(ctx, a)
	if err := d.Write(ctx, a, 0, data); err != nil {
		t.Fatal(err)
	}
	if m, err := d.AllocationMemory(ctx, a); err != nil || m != (sealer.AllocationMemory{Type: sealer.MemoryDevice}) {
		t.Errorf("memory of a VMM shard: %+v, %v", m, err)
	}
	x, err := d.Export(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer x.File.Close()
	imp, err := d.Adopt(ctx, x.File, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(ctx, imp)
	t.Logf("granularity %d bytes, mapped %d; import access %d (1 read-only, 3 read-write)", d.Granularity(), x.MappedSize, imp.(*allocation).vmm.access)
	got := make([]byte, len(data))
	if err := d.Read(ctx, imp, 0, got); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read through the import: %v", err)
	}
}
