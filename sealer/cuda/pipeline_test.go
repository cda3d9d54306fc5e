package cuda

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/vramseal/vramseal/sealer"
)

// sealedShard is a shard written to the fake GPU and its digest as the
// CPU computes it.
type sealedShard struct {
	req  TreeRequest
	want sealer.Digests
}

func writeShards(t *testing.T, d *Device, sizes []uint64, leaf uint64) []sealedShard {
	t.Helper()
	ctx := context.Background()
	var out []sealedShard
	for _, n := range sizes {
		data := randomBytes(t, int(n))
		a, err := d.Alloc(ctx, n+64)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Free(ctx, a) })
		if err := d.Write(ctx, a, 0, data); err != nil {
			t.Fatal(err)
		}
		want, err := sealer.DigestReader(bytes.NewReader(data), leaf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, sealedShard{TreeRequest{a, n, leaf}, want})
	}
	return out
}

func requests(shards []sealedShard) []TreeRequest {
	var r []TreeRequest
	for _, s := range shards {
		r = append(r, s.req)
	}
	return r
}

// TestTreeDigestsMatchCPU: the pipelined verification gives the digests
// the CPU gives (and LeafDigests plus sealer.TreeRoot), shard by shard.
func TestTreeDigestsMatchCPU(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("total", 256<<20)
	d := open(t, f, func(o *Options) { o.launchBytes = 5 * 4096 })[0]
	ctx := context.Background()
	for _, leaf := range []uint64{4096, 16 << 10} {
		shards := writeShards(t, d, []uint64{1, 4097, 3<<20 + 17, 1 << 20, 777777}, leaf)
		for range 2 {
			res, err := d.TreeDigests(ctx, requests(shards))
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range res {
				if r.Err != nil {
					t.Fatalf("shard %d: %v", i, r.Err)
				}
				if got := sealer.FormatDigest(r.Root); got != shards[i].want.Digest {
					t.Errorf("L=%d shard %d: root %s, want %s", leaf, i, got, shards[i].want.Digest)
				}
				leaves, err := d.LeafDigests(ctx, shards[i].req.Allocation, shards[i].req.Size, leaf)
				if err != nil || len(leaves) != len(r.Leaves) || sealer.TreeRoot(shards[i].req.Size, leaf, leaves) != r.Root {
					t.Errorf("L=%d shard %d: LeafDigests and TreeDigests disagree (%v)", leaf, i, err)
				}
				for j := range leaves {
					if leaves[j] != r.Leaves[j] {
						t.Fatalf("L=%d shard %d leaf %d differs", leaf, i, j)
					}
				}
			}
		}
	}
	if raw := randomBytes(t, 32*100); treeRoot(1<<20, 16<<10, raw) != sealer.TreeRoot(1<<20, 16<<10, leavesOf(raw)) {
		t.Error("treeRoot differs from sealer.TreeRoot")
	}
}

// TestDigestBuffersReused: each verification slot allocates its device and
// pinned buffers once and reuses them for every later shard of that size,
// through TreeDigests and LeafDigests alike.
func TestDigestBuffersReused(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("total", 64<<20)
	d := open(t, f)[0]
	ctx := context.Background()
	shards := writeShards(t, d, []uint64{1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20}, 4096)
	allocs := func() int64 { return f.get("calls:cuMemAlloc_v2") + f.get("calls:cuMemHostAlloc") }
	before := allocs()
	for range 4 {
		res, err := d.TreeDigests(ctx, requests(shards))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || sealer.FormatDigest(r.Root) != shards[i].want.Digest {
				t.Fatalf("shard %d: %v", i, r.Err)
			}
		}
		if _, err := d.LeafDigests(ctx, shards[0].req.Allocation, 1<<20, 4096); err != nil {
			t.Fatal(err)
		}
	}
	// 2 slots × (a device and a pinned buffer), for 20 shards and 4 LeafDigests.
	if n := allocs() - before; n > 2*DefaultVerifyInFlight {
		t.Errorf("%d buffers allocated for 24 verifications: want at most %d, each slot's reused", n, 2*DefaultVerifyInFlight)
	}
}

func leavesOf(raw []byte) []sealer.LeafHash {
	out := make([]sealer.LeafHash, len(raw)/32)
	for i := range out {
		copy(out[i][:], raw[32*i:])
	}
	return out
}

// TestTreeDigestsOverlap: with two verifications in flight, the next
// shard's kernel is launched before the previous shard's root is done;
// with one, never (the bound holds).
func TestTreeDigestsOverlap(t *testing.T) {
	for _, inFlight := range []int{2, 1} {
		f := newFake(t, fakeFull)
		f.set("total", 64<<20)
		var base int64
		overlapped := make(chan bool, 1)
		d := open(t, f, func(o *Options) {
			o.VerifyInFlight = inFlight
			o.beforeRoot = func(i int) {
				if i != 0 {
					return
				}
				// Shard 0's root waits (up to a bound) for shard 1's launch.
				wait := 5 * time.Second
				if inFlight == 1 {
					wait = 200 * time.Millisecond
				}
				deadline := time.Now().Add(wait)
				for time.Now().Before(deadline) {
					if f.get("launches") >= base+2 {
						overlapped <- true
						return
					}
					time.Sleep(time.Millisecond)
				}
				overlapped <- false
			}
		})[0]
		shards := writeShards(t, d, []uint64{1 << 20, 1 << 20, 1 << 20}, 16<<10)
		if err := d.PrepareKernel(context.Background()); err != nil {
			t.Fatal(err)
		}
		base = f.get("launches")
		res, err := d.TreeDigests(context.Background(), requests(shards))
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range res {
			if r.Err != nil || sealer.FormatDigest(r.Root) != shards[i].want.Digest {
				t.Errorf("in flight %d: shard %d: %v", inFlight, i, r.Err)
			}
		}
		if got := <-overlapped; got != (inFlight > 1) {
			t.Errorf("%d in flight: shard 1 launched before shard 0's root was done: %v", inFlight, got)
		}
	}
}

// TestTreeDigestsErrors: one shard's failure is its own; a cancelled
// context stops the rest; Close waits for the verifications in flight and
// frees every buffer.
func TestTreeDigestsErrors(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("total", 64<<20)
	d := open(t, f)[0]
	ctx := context.Background()
	shards := writeShards(t, d, []uint64{100000, 100000, 100000}, 4096)
	reqs := requests(shards)
	reqs[1].LeafSize = 1000
	f.failNext(t, "cuLaunchKernel", ResultLaunchTimeout, 2) // the second launch: shard 0's or 2's (shard 1 never launches)
	res, err := d.TreeDigests(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	if res[1].Err == nil {
		t.Error("bad leaf size: no error")
	}
	ok, lost := 0, 0
	for _, i := range []int{0, 2} {
		switch {
		case res[i].Err == nil && sealer.FormatDigest(res[i].Root) == shards[i].want.Digest:
			ok++
		case errors.Is(res[i].Err, ResultLaunchTimeout) && errors.Is(res[i].Err, sealer.ErrDeviceLost):
			lost++
		default:
			t.Errorf("shard %d: %v", i, res[i].Err)
		}
	}
	if ok != 1 || lost != 1 {
		t.Errorf("%d shards intact and %d lost: want one of each", ok, lost)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := d.TreeDigests(cctx, requests(shards)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	for _, s := range shards {
		d.Free(ctx, s.req.Allocation)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.TreeDigests(ctx, requests(shards)); !errors.Is(err, ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	f.expectClean(t)
}
