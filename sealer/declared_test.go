package sealer_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

func newTestSealer(t *testing.T, gpus int, mem uint64) (*sealer.Sealer, *audit.Recorder, *logrus.Logger, *test.Hook) {
	t.Helper()
	devs, err := simgpu.New(simgpu.Config{GPUs: gpus, MemoryBytes: mem, Properties: simgpu.DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sealer.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &audit.Recorder{}
	log, hook := test.NewNullLogger()
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: rec, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return s, rec, log, hook
}

func writeFile(t *testing.T, path string, n int, b byte) {
	t.Helper()
	data := make([]byte, n)
	for i := range data {
		data[i] = b + byte(i%7)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond in real time (the reconciler runs in its own goroutine).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runDeclared runs d until the test ends.
func runDeclared(t *testing.T, d *sealer.Declared) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestDeclaredSealsRetriesAndReloads(t *testing.T) {
	dir := t.TempDir()
	a, b, c := filepath.Join(dir, "a.bin"), filepath.Join(dir, "b.bin"), filepath.Join(dir, "c.bin")
	writeFile(t, a, 100_000, 1)
	s, rec, log, hook := newTestSealer(t, 2, 64<<20)
	clock := sealer.NewFakeClock()
	var changes atomic.Int32
	d := sealer.NewDeclared(s, sealer.DeclaredConfig{Clock: clock, Logger: log, MinBackoff: time.Second, MaxBackoff: 8 * time.Second,
		OnChange: func() { changes.Add(1) }})
	added, _, _ := d.Set([]sealer.DeclaredShard{{ID: "a", Path: a, GPU: 0}, {ID: "b", Path: b, GPU: 1}})
	if len(added) != 2 {
		t.Fatalf("added %v", added)
	}
	runDeclared(t, d)

	// "a" seals, "b" (missing file) is reported and retried with backoff.
	clock.BlockUntil(t, 1)
	if _, err := s.Shard("a"); err != nil {
		t.Fatalf("declared shard a not sealed: %v", err)
	}
	if (len(d.Pending()) == 0) || len(d.Pending()) != 1 || d.Pending()[0] != "b" {
		t.Fatalf("ready=%v pending=%v, want not ready with b pending", (len(d.Pending()) == 0), d.Pending())
	}
	if d.LastError("b") == nil {
		t.Error("no error kept for b")
	}
	retries := func() int {
		n := 0
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.ErrorLevel && e.Data[logfield.ShardID] == "b" {
				n++
			}
		}
		return n
	}
	if retries() != 1 {
		t.Fatalf("%d error lines for b, want 1", retries())
	}
	// Backoff doubles: 1s, 2s, 4s, 8s, 8s (capped).
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		clock.Advance(wait - time.Millisecond)
		clock.BlockUntil(t, 1)
		if retries() != i+1 {
			t.Fatalf("retried before the backoff of %s ended", wait)
		}
		clock.Advance(time.Millisecond)
		waitFor(t, "a retry", func() bool { return retries() == i+2 })
		clock.BlockUntil(t, 1)
	}
	writeFile(t, b, 50_000, 2)
	clock.Advance(8 * time.Second)
	waitFor(t, "b sealed", func() bool { return len(d.Pending()) == 0 })
	sealedA, _ := s.Shard("a")

	// Reload: a unchanged, b removed, c added.
	writeFile(t, c, 70_000, 3)
	rec.Reset()
	added, removed, changed := d.Set([]sealer.DeclaredShard{{ID: "a", Path: a, GPU: 0}, {ID: "c", Path: c, GPU: 1, ModelRef: "m"}})
	if len(added) != 1 || added[0] != "c" || len(removed) != 1 || removed[0] != "b" || len(changed) != 0 {
		t.Fatalf("added %v removed %v changed %v", added, removed, changed)
	}
	waitFor(t, "c sealed and b released", func() bool {
		_, errB := s.Shard("b")
		_, errC := s.Shard("c")
		return errB != nil && errC == nil && (len(d.Pending()) == 0)
	})
	nowA, _ := s.Shard("a")
	if nowA.Seal != sealedA.Seal {
		t.Error("the unchanged shard a was touched by the reload")
	}
	for _, ev := range rec.Events() {
		if ev.Name() == audit.NameVRAMDeallocated && ev.(audit.VRAMDeallocated).ShardID == "a" {
			t.Error("shard a deallocated by a reload that did not change it")
		}
	}
	if len(rec.Named(audit.NameVRAMDeallocated)) != 1 || len(rec.Named(audit.NameVRAMSealed)) != 1 {
		t.Errorf("reload events: %d deallocated, %d sealed; want 1 and 1", len(rec.Named(audit.NameVRAMDeallocated)), len(rec.Named(audit.NameVRAMSealed)))
	}

	// Changing a declaration re-seals the shard.
	d.Set([]sealer.DeclaredShard{{ID: "a", Path: a, GPU: 1}, {ID: "c", Path: c, GPU: 1, ModelRef: "m"}})
	waitFor(t, "a re-sealed on GPU 1", func() bool {
		st, err := s.Shard("a")
		return err == nil && st.Seal.GPUDevice == 1 && (len(d.Pending()) == 0)
	})
	if changes.Load() < 4 {
		t.Errorf("OnChange called %d times", changes.Load())
	}
}

func TestDeclaredShardLargerThanGPUIsRetriedNotFatal(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.bin")
	writeFile(t, big, 2<<20, 1)
	s, rec, log, _ := newTestSealer(t, 1, 1<<20)
	clock := sealer.NewFakeClock()
	d := sealer.NewDeclared(s, sealer.DeclaredConfig{Clock: clock, Logger: log})
	d.Set([]sealer.DeclaredShard{{ID: "big", Path: big}})
	runDeclared(t, d)
	clock.BlockUntil(t, 1)
	if len(d.Pending()) == 0 {
		t.Fatal("ready with a shard that cannot fit")
	}
	if sealer.KindOf(d.LastError("big")) != sealer.KindInsufficientVRAM {
		t.Errorf("error %v, want insufficient VRAM", d.LastError("big"))
	}
	if len(rec.Named(audit.NameVRAMAllocationFailed)) != 1 {
		t.Errorf("%d allocation_failed events", len(rec.Named(audit.NameVRAMAllocationFailed)))
	}
}

func TestDeclaredShardThatIsADirectoryIsReported(t *testing.T) {
	dir := t.TempDir()
	s, _, log, _ := newTestSealer(t, 1, 1<<20)
	clock := sealer.NewFakeClock()
	d := sealer.NewDeclared(s, sealer.DeclaredConfig{Clock: clock, Logger: log})
	d.Set([]sealer.DeclaredShard{{ID: "d", Path: dir}})
	runDeclared(t, d)
	clock.BlockUntil(t, 1)
	err := d.LastError("d")
	if (len(d.Pending()) == 0) || sealer.KindOf(err) != sealer.KindInvalid || !strings.Contains(err.Error(), "is not a regular file") {
		t.Fatalf("ready=%v, error %v", (len(d.Pending()) == 0), err)
	}
}

func TestDeclaredShardReleasedThroughTheAPIIsSealedAgain(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "a.bin")
	writeFile(t, a, 10_000, 1)
	s, _, log, _ := newTestSealer(t, 1, 1<<20)
	clock := sealer.NewFakeClock()
	d := sealer.NewDeclared(s, sealer.DeclaredConfig{Clock: clock, Logger: log})
	d.Set([]sealer.DeclaredShard{{ID: "a", Path: a}})
	runDeclared(t, d)
	clock.BlockUntil(t, 1)
	first, err := s.Shard("a")
	if err != nil || !(len(d.Pending()) == 0) {
		t.Fatalf("not sealed: %v", err)
	}
	if _, err := s.Release(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if len(d.Pending()) == 0 {
		t.Fatal("ready while a declared shard is released")
	}
	d.Notify()
	// The sealer holds the shard a moment before the reconciler records
	// it: wait for readiness, which needs both.
	waitFor(t, "a sealed again and the agent ready", func() bool { return len(d.Pending()) == 0 })
	if st, err := s.Shard("a"); err != nil || st.Seal.Signature == first.Seal.Signature {
		t.Errorf("not sealed again: %+v, %v", st, err)
	}
}
