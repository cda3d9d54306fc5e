package cuda

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

// readerDevice opens the fake with attachments read in reader processes
// (this test binary, which serves as one: TestMain).
func readerDevice(t *testing.T, f *fake) *Device {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return open(t, f, func(o *Options) { o.ReaderCommand = []string{self} })[0]
}

// TestReaderProcess: attachments by VMM descriptor and by IPC handle are
// read in one reader process per GPU: the same bytes, the memory's type
// asked there, leaf digests on the host equal to the CPU's.
func TestReaderProcess(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := readerDevice(t, f)
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	data, h := engineSegment(t, g, engine, 300000)
	viaIPC, err := agent.AdoptIPC(ctx, h, 1000, 200000)
	if err != nil {
		t.Fatal(err)
	}
	mem, _ := engine.Alloc(ctx, 70000)
	defer engine.Free(ctx, mem)
	own := randomBytes(t, 70000)
	engine.Write(ctx, mem, 0, own)
	x, err := engine.Export(ctx, mem)
	if err != nil {
		t.Fatal(err)
	}
	viaFD, err := agent.Adopt(ctx, x.File, 70000)
	x.File.Close()
	if err != nil {
		t.Fatal(err)
	}
	if f.get("vmm_maps")+f.get("vmm_handles") != 0 || f.get("calls:cuIpcOpenMemHandle_v2") != 0 {
		t.Error("the agent's own driver imported attached memory")
	}
	if viaIPC.(*allocation).remote.r != viaFD.(*allocation).remote.r {
		t.Error("two reader processes for one GPU")
	}
	got := make([]byte, 200000)
	if err := agent.Read(ctx, viaIPC, 0, got); err != nil || !bytes.Equal(got, data[1000:201000]) {
		t.Fatalf("read through the reader (IPC): %v", err)
	}
	got = make([]byte, 70000)
	if err := agent.Read(ctx, viaFD, 0, got); err != nil || !bytes.Equal(got, own) {
		t.Fatalf("read through the reader (VMM): %v", err)
	}
	if m, err := agent.AllocationMemory(ctx, viaFD); err != nil || m.Type != sealer.MemoryDevice {
		t.Errorf("memory of an attachment read out of process: %+v, %v", m, err)
	}
	leaves, err := agent.LeafDigests(ctx, viaIPC, 200000, 4096)
	want := sealer.HashLeaves(data[1000:201000], 4096, 1)
	if err != nil || len(leaves) != len(want) || leaves[len(leaves)-1] != want[len(want)-1] || leaves[0] != want[0] {
		t.Errorf("leaf digests of an attachment read out of process: %d, %v", len(leaves), err)
	}
	res, err := agent.TreeDigests(ctx, []TreeRequest{{Allocation: viaFD, Size: 70000, LeafSize: 4096}})
	if err != nil || res[0].Err != nil || sealer.FormatDigest(res[0].Root) != sealer.FormatDigest(sealer.TreeRoot(70000, 4096, sealer.HashLeaves(own, 4096, 1))) {
		t.Errorf("tree digest of an attachment read out of process: %+v, %v", res, err)
	}
	if _, err := agent.AdoptIPC(ctx, h, 299999, 1<<20); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("a range past the segment, checked in the reader: %v", err)
	}
	for _, a := range []sealer.Allocation{viaIPC, viaFD} {
		if err := agent.Free(ctx, a); err != nil {
			t.Errorf("free: %v", err)
		}
	}
	agent.readerMu.Lock()
	defer agent.readerMu.Unlock()
	if agent.rd != nil {
		t.Error("the reader process outlived its last attachment")
	}
}

// TestReaderProcessContainsStickyErrors: a sticky error while reading an
// attachment ends its reader process only: the attachment is faulted, the
// agent's own context and shards are untouched.
func TestReaderProcessContainsStickyErrors(t *testing.T) {
	ctx := context.Background()
	f := newFake(t, fakeFull)
	agent := readerDevice(t, f)
	g := newFake(t, fakeFull)
	engine := open(t, g)[0]
	_, h := engineSegment(t, g, engine, 50000)
	// The reader's own copy of the driver fails its first stream sync with
	// an illegal address.
	t.Setenv("FAKECUDA_FAIL", "cuStreamSynchronize:700:1")
	att, err := agent.AdoptIPC(ctx, h, 0, 50000)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("FAKECUDA_FAIL", "")
	own, _ := agent.Alloc(ctx, 50000)
	mine := randomBytes(t, 50000)
	if err := agent.Write(ctx, own, 0, mine); err != nil {
		t.Fatal(err)
	}
	syncs := f.get("calls:cuStreamSynchronize")
	err = agent.Read(ctx, att, 0, make([]byte, 50000))
	var fault *AttachedFault
	if !errors.As(err, &fault) || !errors.Is(err, sealer.ErrAllocationMissing) || errors.Is(err, sealer.ErrDeviceLost) {
		t.Fatalf("sticky error in the reader: %v", err)
	}
	if !strings.Contains(err.Error(), "CUDA_ERROR_ILLEGAL_ADDRESS") {
		t.Errorf("the fault does not name the reader's error: %v", err)
	}
	if _, err := agent.LeafDigests(ctx, att, 50000, 4096); !errors.As(err, &fault) {
		t.Errorf("digests after the fault: %v", err)
	}
	if f.get("calls:cuStreamSynchronize") != syncs {
		t.Error("the agent's own driver served the attachment's reads")
	}
	got := make([]byte, 50000)
	if err := agent.Read(ctx, own, 0, got); err != nil || !bytes.Equal(got, mine) {
		t.Errorf("the agent's own shard after the reader's fault: %v", err)
	}
	if err := agent.Free(ctx, att); err != nil {
		t.Errorf("freeing a faulted attachment: %v", err)
	}
	// The next attachment gets a new reader.
	again, err := agent.AdoptIPC(ctx, h, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := agent.Read(ctx, again, 0, make([]byte, 100)); err != nil {
		t.Errorf("read through a new reader: %v", err)
	}
	agent.Free(ctx, own)
	if err := agent.Close(); err != nil {
		t.Errorf("Close with an attachment held by the reader: %v", err)
	}
}
