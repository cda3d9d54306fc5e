package sealer_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

func TestBufferPoolBudget(t *testing.T) {
	if _, err := sealer.NewBufferPool(sealer.BufferSize - 1); err == nil {
		t.Fatal("a budget smaller than one buffer was accepted")
	}
	p, err := sealer.NewBufferPool(2 * sealer.BufferSize)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	a, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != sealer.BufferSize || p.Mapped() != 2*sealer.BufferSize {
		t.Fatalf("len %d, mapped %d", len(a), p.Mapped())
	}
	// The budget is spent: a third caller waits, and gives up with its context.
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if _, err := p.Get(cctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Get over budget: %v, want the context's error", err)
	}
	got := make(chan []byte)
	go func() {
		c, err := p.Get(ctx)
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	p.Put(a)
	c := <-got
	if p.Mapped() != 2*sealer.BufferSize {
		t.Fatalf("mapped %d after reuse, want 2 buffers", p.Mapped())
	}
	p.Put(b)
	p.Put(c)
	p.Trim()
	if p.Mapped() != 0 {
		t.Fatalf("mapped %d after Trim, want 0", p.Mapped())
	}
}

// countingDevice counts the reads in flight and keeps the highest count.
type countingDevice struct {
	*simgpu.Device
	now, peak atomic.Int64
}

func (d *countingDevice) Read(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	n := d.now.Add(1)
	defer d.now.Add(-1)
	for {
		old := d.peak.Load()
		if n <= old || d.peak.CompareAndSwap(old, n) {
			break
		}
	}
	time.Sleep(time.Millisecond)
	return d.Device.Read(ctx, a, off, p)
}

// Many verifications at once on one GPU: at most MaxVerifyInFlightPerGPU
// read it at a time, no more buffers exist than the budget allows, every
// result is right, and the buffers are given back.
func TestVerifyBoundedPerGPU(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 256 << 20})
	cd := &countingDevice{Device: devs[0]}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	pool, err := sealer.NewBufferPool(3 * sealer.BufferSize)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: []sealer.Device{cd}, Signer: signer, Emitter: &audit.Recorder{},
		Buffers: pool, MaxVerifyInFlightPerGPU: 1, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s.MaxVerifyInFlightPerGPU() != 1 || s.Buffers() != pool {
		t.Fatal("options not kept")
	}
	dir := t.TempDir()
	ctx := context.Background()
	const shards = 6
	for i := range shards {
		p := filepath.Join(dir, string(rune('a'+i)))
		_ = os.WriteFile(p, data(9<<20+123, byte(i)), 0o600)
		if _, err := s.Seal(ctx, sealer.SealRequest{ID: filepath.Base(p), Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for i := range 4 * shards {
		wg.Go(func() {
			id := string(rune('a' + i%shards))
			if res, err := s.Verify(ctx, id); err != nil || !res.Intact() {
				t.Errorf("verify %s: %v %+v", id, err, res)
			}
			if m := pool.Mapped(); m > pool.Budget() {
				t.Errorf("%d bytes of buffers mapped, budget %d", m, pool.Budget())
			}
		})
	}
	wg.Wait()
	// One verification at a time, on two workers: two reads at most.
	if p := cd.peak.Load(); p > 2 {
		t.Fatalf("%d reads of the GPU in flight, want at most 2 (one verification, two workers)", p)
	}

	// A caller waiting for the GPU gives up when its context ends.
	hold := make(chan struct{})
	bd := &blockingDevice{Device: devs[0], entered: make(chan struct{})}
	s2, _ := sealer.New(sealer.Config{WorkerID: "w", Devices: []sealer.Device{bd}, Signer: signer, Emitter: &audit.Recorder{},
		Buffers: pool, MaxVerifyInFlightPerGPU: 1})
	p := filepath.Join(dir, "x")
	_ = os.WriteFile(p, data(2*leaf, 9), 0o600)
	for _, id := range []string{"x", "y"} {
		if _, err := s2.Seal(ctx, sealer.SealRequest{ID: id, Path: p}); err != nil {
			t.Fatal(err)
		}
	}
	bctx, stop := context.WithCancel(ctx)
	go func() { _, _ = s2.Verify(bctx, "x"); close(hold) }()
	<-bd.entered
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if res, err := s2.Verify(wctx, "y"); sealer.KindOf(err) != sealer.KindCancelled || res.Result != sealer.ResultCancelled {
		t.Fatalf("waiting verification: %v %+v, want cancelled", err, res)
	}
	stop()
	<-hold
	pool.Trim()
	if pool.Mapped() != 0 {
		t.Fatalf("%d bytes still mapped after Trim", pool.Mapped())
	}
}

// With a budget of one buffer, seals and verifications running together
// take turns: every one completes.
func TestOneBufferBudgetSealsAndVerifies(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 512 << 20})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	pool, err := sealer.NewBufferPool(sealer.BufferSize)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: &audit.Recorder{}, Buffers: pool})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "f")
	_ = os.WriteFile(p, data(13<<20+5, 3), 0o600)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "base", Path: p}); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			id := string(rune('a' + i))
			if _, err := s.Seal(ctx, sealer.SealRequest{ID: id, Path: p}); err != nil {
				t.Errorf("seal %s: %v", id, err)
			}
		})
		wg.Go(func() {
			if res, err := s.Verify(ctx, "base"); err != nil || !res.Intact() {
				t.Errorf("verify: %v %+v", err, res)
			}
		})
	}
	wg.Wait()
	if pool.Mapped() > pool.Budget() {
		t.Fatalf("%d bytes mapped, budget %d", pool.Mapped(), pool.Budget())
	}
}

// Leaves larger than a buffer are read and hashed in pieces, with the same
// digest as the seal computed, and a flipped bit is still found in its leaf.
func TestLeavesLargerThanABuffer(t *testing.T) {
	e := newEnv(t, 1, 64<<20, sealer.VerifyHost)
	ctx := context.Background()
	content := data(2*sealer.MaxLeafSize+5, 4)
	p := e.file(t, "big", content)
	seal, err := e.s.Seal(ctx, sealer.SealRequest{ID: "big", Path: p, LeafSize: sealer.MaxLeafSize})
	if err != nil {
		t.Fatal(err)
	}
	d, err := sealer.DigestReader(bytes.NewReader(content), sealer.MaxLeafSize)
	if err != nil || d.Digest != seal.Digest {
		t.Fatalf("seal digest %s, offline %s (%v)", seal.Digest, d.Digest, err)
	}
	if res, err := e.s.Verify(ctx, "big"); err != nil || !res.Intact() {
		t.Fatalf("verify: %v %+v", err, res)
	}
	off := uint64(sealer.MaxLeafSize + 3*sealer.BufferSize + 7)
	if err := simgpu.Corrupt(ctx, e.s, "big", off, 1); err != nil {
		t.Fatal(err)
	}
	res, _ := e.s.Verify(ctx, "big")
	if res.Result != "digest_mismatch" || res.FirstBadOffset != sealer.MaxLeafSize || res.BadChunks != 1 {
		t.Fatalf("after a flip at %d: %+v", off, res)
	}
}
