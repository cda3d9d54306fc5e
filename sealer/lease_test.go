package sealer_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

var consumer = audit.Caller{UID: 1000, GID: 1000, PID: 4242, Executable: "/usr/bin/engine"}

// TestOpenHandsTheSameMemory: an opened shard's descriptor maps the very
// bytes the sealer verifies, read-only: a shared writable mapping and a
// write are refused, and a bit flipped in the agent shows through it.
func TestOpenHandsTheSameMemory(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	content := data(3*leaf+17, 9)
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "s", Path: e.file(t, "f", content), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	l, err := e.s.Open(ctx, "s", consumer, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close(ctx)
	defer l.File.Close()
	if l.Seal.VRAMBytes != uint64(len(content)) || l.Consumer != consumer {
		t.Fatalf("lease %+v", l)
	}
	m, err := unix.Mmap(int(l.File.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	if !bytes.Equal(m, content) {
		t.Fatal("the mapping does not hold the file's bytes")
	}
	if _, err := unix.Mmap(int(l.File.Fd()), 0, len(content), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); !errors.Is(err, syscall.EPERM) {
		t.Errorf("a shared writable mapping: %v, want EPERM", err)
	}
	if _, err := l.File.WriteAt([]byte{1}, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("a write: %v, want EPERM", err)
	}
	if err := l.File.Truncate(1); err == nil {
		t.Error("the shard could be shrunk")
	}
	if err := simgpu.Corrupt(ctx, e.s, "s", leaf+5, 2); err != nil {
		t.Fatal(err)
	}
	if m[leaf+5] == content[leaf+5] {
		t.Error("a bit flipped in the agent does not show through the consumer's mapping")
	}
	if res, _ := e.s.Verify(ctx, "s"); res.Intact() {
		t.Error("verify missed the flipped bit")
	}
	if ev := e.rec.Named(audit.NameVRAMOpened); len(ev) != 1 || ev[0].(audit.VRAMOpened).Consumer != consumer {
		t.Errorf("vram.opened events: %v", ev)
	}
	if _, err := e.s.Open(ctx, "s", consumer, nil); sealer.KindOf(err) != sealer.KindIntegrity {
		t.Errorf("a failed shard was opened: %v", err)
	}
}

func TestReleaseOfALeasedShard(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "s", Path: e.file(t, "f", data(2*leaf, 1)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	revoked := 0
	l, err := e.s.Open(ctx, "s", consumer, func() { revoked++ })
	if err != nil {
		t.Fatal(err)
	}
	l.File.Close()
	_, err = e.s.Release(ctx, "s")
	if sealer.KindOf(err) != sealer.KindBusy || !strings.Contains(err.Error(), "pid 4242 (uid 1000, /usr/bin/engine)") {
		t.Fatalf("release of a leased shard: %v", err)
	}
	if st, _ := e.s.Shard("s"); len(st.Leases) != 1 || st.Leases[0] != consumer {
		t.Errorf("status leases %+v", st.Leases)
	}
	l.Close(ctx)
	l.Close(ctx) // twice is fine
	if e.s.Leases() != 0 {
		t.Fatal("the lease did not end")
	}
	if _, err := e.s.Release(ctx, "s"); err != nil {
		t.Fatalf("release after the lease ended: %v", err)
	}
	d := e.rec.Named(audit.NameVRAMDeallocated)
	if len(d) != 1 || d[0].(audit.VRAMDeallocated).Reason != audit.DeallocReleased || revoked != 0 {
		t.Errorf("deallocated %v, revoked %d", d, revoked)
	}
	if c := e.rec.Named(audit.NameVRAMClosed); len(c) != 1 || c[0].(audit.VRAMClosed).Reason != audit.CloseConsumer {
		t.Errorf("closed events %v", c)
	}

	// Forced: the lease is revoked, the holder named as maybe still mapping.
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "t", Path: e.file(t, "g", data(leaf, 2)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	l2, err := e.s.Open(ctx, "t", consumer, func() { revoked++ })
	if err != nil {
		t.Fatal(err)
	}
	l2.File.Close()
	res, err := e.s.ForceRelease(ctx, "t")
	if err != nil || len(res.StillMappedBy) != 1 || res.StillMappedBy[0] != 4242 || revoked != 1 || e.s.Leases() != 0 {
		t.Fatalf("forced release %+v, %v; revoked %d", res, err, revoked)
	}
	d = e.rec.Named(audit.NameVRAMDeallocated)
	if last := d[len(d)-1].(audit.VRAMDeallocated); last.Reason != audit.DeallocForced || audit.PIDList(last.StillMappedBy) != "4242" {
		t.Errorf("forced deallocation %+v", last)
	}
	c := e.rec.Named(audit.NameVRAMClosed)
	if last := c[len(c)-1].(audit.VRAMClosed); last.Reason != audit.CloseRevoked {
		t.Errorf("revoked lease closed with %q", last.Reason)
	}
	if e.devs[0].LiveAllocations() != 0 {
		t.Error("memory not freed")
	}
}

// TestShutdownWaitsForLeases: Shutdown gives consumers LeaseWait, then
// revokes what is left, with reason shutdown.
func TestShutdownWaitsForLeases(t *testing.T) {
	devs, err := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 16 << 20, Properties: simgpu.DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	rec := &audit.Recorder{}
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: rec,
		LeafSize: leaf, LeaseWait: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{s: s, devs: devs, rec: rec, dir: t.TempDir()}
	ctx := context.Background()
	for _, id := range []string{"closes", "stays"} {
		if _, err := s.Seal(ctx, sealer.SealRequest{ID: id, Path: e.file(t, id, data(leaf, 3)), GPU: 0}); err != nil {
			t.Fatal(err)
		}
	}
	closes, _ := s.Open(ctx, "closes", consumer, nil)
	stays, _ := s.Open(ctx, "stays", consumer, nil)
	closes.File.Close()
	stays.File.Close()
	go func() { time.Sleep(50 * time.Millisecond); closes.Close(ctx) }()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 250*time.Millisecond {
		t.Error("shutdown did not wait for the lease still open")
	}
	if _, err := s.Open(ctx, "stays", consumer, nil); err == nil {
		t.Error("opened during shutdown")
	}
	reasons := map[string]string{}
	for _, ev := range rec.Named(audit.NameVRAMDeallocated) {
		reasons[ev.(audit.VRAMDeallocated).ShardID] = ev.(audit.VRAMDeallocated).Reason + "/" + audit.PIDList(ev.(audit.VRAMDeallocated).StillMappedBy)
	}
	if reasons["closes"] != "shutdown/" || reasons["stays"] != "shutdown/4242" {
		t.Errorf("deallocations %v", reasons)
	}
}
