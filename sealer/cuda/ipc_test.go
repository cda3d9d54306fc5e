package cuda

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebitengine/purego"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
)

// engineSegment allocates size bytes on the engine's fake GPU, fills them
// and returns the bytes and the segment's legacy IPC handle
// (cuIpcGetMemHandle of the engine's copy of the driver).
func engineSegment(t *testing.T, g *fake, engine *Device, size int) ([]byte, [sealer.IPCHandleSize]byte) {
	t.Helper()
	ctx := context.Background()
	a, err := engine.Alloc(ctx, uint64(size))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { engine.Free(ctx, a) })
	data := randomBytes(t, size)
	if err := engine.Write(ctx, a, 0, data); err != nil {
		t.Fatal(err)
	}
	p, err := g.lib.Sym("cuIpcGetMemHandle")
	if err != nil {
		t.Fatal(err)
	}
	var get func(h *IPCHandle, ptr uint64) Result
	purego.RegisterFunc(&get, p)
	var h IPCHandle
	if r := get(&h, a.(*allocation).ptr); r != Success {
		t.Fatal(r)
	}
	return data, h.Reserved
}

// TestIPCAttach: a legacy IPC handle is opened once however many
// attachments share it, read in place at their offsets, and closed with
// the last; ranges outside the segment are refused.
func TestIPCAttach(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := open(t, f)[0]
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	data, h := engineSegment(t, g, engine, 200000)
	a, err := agent.AdoptIPC(ctx, h, 4096, 1000)
	if err != nil {
		t.Fatal(err)
	}
	b, err := agent.AdoptIPC(ctx, h, 0, 200000)
	if err != nil {
		t.Fatal(err)
	}
	if n := f.get("calls:cuIpcOpenMemHandle_v2"); n != 1 {
		t.Errorf("the handle was opened %d times, want once", n)
	}
	got := make([]byte, 1000)
	if err := agent.Read(ctx, a, 0, got); err != nil || !bytes.Equal(got, data[4096:5096]) {
		t.Errorf("read at the attachment's offset: %v", err)
	}
	if m, err := agent.AllocationMemory(ctx, a); err != nil || m.Type != "device" {
		t.Errorf("memory of an IPC attachment: %+v, %v", m, err)
	}
	// The segment is the whole allocation: 200000 bytes rounded up to 256 KiB.
	if _, err := agent.AdoptIPC(ctx, h, 262143, 2); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("a range past the segment: %v", err)
	}
	if _, err := agent.Export(ctx, b); err == nil {
		t.Error("attached memory was exported")
	}
	if err := agent.Free(ctx, a); err != nil || f.get("calls:cuIpcCloseMemHandle") != 0 {
		t.Errorf("first free: %v; closed %d times", err, f.get("calls:cuIpcCloseMemHandle"))
	}
	if err := agent.Free(ctx, b); err != nil || f.get("calls:cuIpcCloseMemHandle") != 1 {
		t.Errorf("last free: %v; closed %d times", err, f.get("calls:cuIpcCloseMemHandle"))
	}
	f.expectNoVMM(t)
	// Opened anew after the last close; a failure to open is returned.
	f.failNext(t, "cuIpcOpenMemHandle_v2", ResultInvalidValue, 1)
	if _, err := agent.AdoptIPC(ctx, h, 0, 1); !errors.Is(err, ResultInvalidValue) {
		t.Errorf("open failing: %v", err)
	}
	f.failNext(t, "cuMemGetAddressRange_v2", ResultInvalidValue, 1)
	if _, err := agent.AdoptIPC(ctx, h, 0, 1); !errors.Is(err, ResultInvalidValue) {
		t.Errorf("address range failing: %v", err)
	}
	f.expectNoVMM(t)
}

// TestAttachedFaultContained: a sticky error while reading attached
// memory is contained to that attachment: reported as its memory gone,
// never as the device lost, later reads of it fail without calling the
// driver, and the agent's own shard on the GPU reads on.
func TestAttachedFaultContained(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := open(t, f)[0]
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	_, h := engineSegment(t, g, engine, 50000)
	att, err := agent.AdoptIPC(ctx, h, 0, 50000)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := agent.Alloc(ctx, 50000)
	mine := randomBytes(t, 50000)
	if err := agent.Write(ctx, own, 0, mine); err != nil {
		t.Fatal(err)
	}
	f.failNext(t, "cuStreamSynchronize", ResultIllegalAddress, 1)
	err = agent.Read(ctx, att, 0, make([]byte, 50000))
	var fault *AttachedFault
	if !errors.As(err, &fault) || !errors.Is(err, sealer.ErrAllocationMissing) || errors.Is(err, sealer.ErrDeviceLost) {
		t.Fatalf("sticky error on attached memory: %v", err)
	}
	copies := f.get("calls:cuMemcpyDtoHAsync_v2")
	if err := agent.Read(ctx, att, 0, make([]byte, 10)); !errors.As(err, &fault) || f.get("calls:cuMemcpyDtoHAsync_v2") != copies {
		t.Errorf("read after the fault: %v (driver called: %v)", err, f.get("calls:cuMemcpyDtoHAsync_v2") != copies)
	}
	if _, err := agent.LeafDigests(ctx, att, 50000, 4096); !errors.As(err, &fault) {
		t.Errorf("digests after the fault: %v", err)
	}
	got := make([]byte, 50000)
	if err := agent.Read(ctx, own, 0, got); err != nil || !bytes.Equal(got, mine) {
		t.Errorf("the agent's own shard after the contained fault: %v", err)
	}
	// The same error on the agent's own shard is the device's.
	f.failNext(t, "cuStreamSynchronize", ResultIllegalAddress, 1)
	if err := agent.Read(ctx, own, 0, got); !errors.Is(err, sealer.ErrDeviceLost) {
		t.Errorf("sticky error on the agent's own shard: %v", err)
	}
	if err := agent.Free(ctx, att); err != nil {
		t.Errorf("freeing a faulted attachment: %v", err)
	}
	agent.Free(ctx, own)
}

// TestIPCAttachThroughSealer: an engine's segment attached by IPC handle
// and GPU UUID is sealed in place and verified on the schedule beside a
// shard of the agent's own; a sticky error reading it fails that shard
// alone (allocation_missing); an owner in another pid namespace is
// refused.
func TestIPCAttachThroughSealer(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := open(t, f)[0]
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	data, h := engineSegment(t, g, engine, 3*sealer.MinLeafSize+17)
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	rec := &audit.Recorder{}
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: []sealer.Device{agent}, Signer: signer, Emitter: rec, LeafSize: sealer.MinLeafSize})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "own")
	if err := os.WriteFile(path, randomBytes(t, 20000), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "own", Path: path}); err != nil {
		t.Fatal(err)
	}
	owner := audit.Caller{UID: 1000, GID: 1000, PID: int64(os.Getpid())}
	req := sealer.AttachRequest{ID: "engine", IPCHandle: &h, Offset: 17, Size: uint64(len(data) - 17),
		GPUUUID: agent.StaticProperties().UUID, Owner: owner}
	if _, err := s.Attach(ctx, sealer.AttachRequest{ID: "x", IPCHandle: &h, Size: 10, Owner: audit.Caller{PID: -1}}); err == nil ||
		!strings.Contains(err.Error(), "pid namespace") {
		t.Errorf("IPC attach from another pid namespace: %v", err)
	}
	if _, err := s.Attach(ctx, sealer.AttachRequest{ID: "x", IPCHandle: &h, Size: 10, Owner: owner, GPUUUID: "GPU-00000000-0000-0000-0000-000000000000"}); err == nil ||
		!strings.Contains(err.Error(), "no GPU") {
		t.Errorf("IPC attach on an unknown GPU UUID: %v", err)
	}
	att, err := s.Attach(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sealer.DigestReader(bytes.NewReader(data[17:]), sealer.MinLeafSize)
	if att.Seal.Digest != want.Digest {
		t.Error("the attached seal is not of the bytes at the offset")
	}
	f.failNext(t, "cuStreamSynchronize", ResultIllegalAddress, 1)
	if res, err := s.Verify(ctx, "engine"); err == nil || res.Result != audit.ReasonAllocationMissing {
		t.Errorf("verification of the faulted attachment: %+v, %v", res, err)
	}
	if res, err := s.Verify(ctx, "own"); err != nil || !res.Intact() {
		t.Errorf("the agent's own shard after the contained fault: %+v, %v", res, err)
	}
	if _, err := att.OwnerExited(ctx); err != nil {
		t.Errorf("releasing the faulted attachment: %v", err)
	}
	if _, err := s.Release(ctx, "own"); err != nil {
		t.Fatal(err)
	}
	f.expectNoVMM(t)
}
