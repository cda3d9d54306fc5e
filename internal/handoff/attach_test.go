package handoff

import (
	"context"
	"encoding/binary"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/internal/wire"
)

// TestAttachOverTheSocket: attach, verify in place, a change caught,
// detach; a second attachment released when its owner's connection ends;
// bad attaches answered clearly; no descriptor leaked.
func TestAttachOverTheSocket(t *testing.T) {
	f := newFixture(t, control.Access{})
	ctx := context.Background()
	before := openFDs(t)
	data := []byte(strings.Repeat("tensor!!", 8192))
	mem, m := testenv.Memfd(t, data, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)
	c, err := client.DialConsumer(ctx, f.socket)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Attach(ctx, "engine-w0", mem, client.AttachOptions{ModelRef: "engine@1"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Seal.VRAMBytes != uint64(len(data)) || a.Seal.ModelRef != "engine@1" {
		t.Fatalf("seal %+v", a.Seal)
	}
	if res, err := c.VerifySeal(ctx, a.Seal); err != nil || !res.Intact() {
		t.Fatalf("verify: %+v, %v", res, err)
	}
	m[100] ^= 1
	if res, _ := f.sealer.Verify(ctx, "engine-w0"); res.Intact() {
		t.Error("a change by the owner was not caught")
	}
	if err := a.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if len(f.sealer.List()) != 1 { // "s" of the fixture stays
		t.Fatalf("%d shards after detach", len(f.sealer.List()))
	}
	if _, err := c.Attach(ctx, "engine-w1", mem, client.AttachOptions{}); err != nil {
		t.Fatal(err)
	}
	c.Close() // the owner goes away
	waitFor(t, "the owner's attachment to be released", func() bool { return len(f.sealer.List()) == 1 })
	reasons := []string{}
	for _, ev := range f.rec.Named(audit.NameVRAMDeallocated) {
		reasons = append(reasons, ev.(audit.VRAMDeallocated).Reason)
	}
	if strings.Join(reasons, ",") != "detached,owner_exited" {
		t.Errorf("deallocation reasons %v", reasons)
	}

	// Bad attaches.
	c, err = client.DialConsumer(ctx, f.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	unsealed, _ := testenv.Memfd(t, data, 0)
	for name, tc := range map[string]struct {
		id   string
		mem  *os.File
		o    client.AttachOptions
		kind string
	}{
		"no seals":        {"x", unsealed, client.AttachOptions{}, "invalid"},
		"size too large":  {"x", mem, client.AttachOptions{Size: uint64(len(data)) + 1}, "invalid"},
		"unknown GPU":     {"x", mem, client.AttachOptions{GPU: 7}, "invalid"},
		"duplicate id":    {"s", mem, client.AttachOptions{}, "exists"},
		"pinned mismatch": {"x", mem, client.AttachOptions{SHA256: strings.Repeat("0", 64)}, "integrity"},
	} {
		if _, err := c.Attach(ctx, tc.id, tc.mem, tc.o); !isKind(err, tc.kind) {
			t.Errorf("%s: %v, want kind %s", name, err, tc.kind)
		}
	}
	// An attach announcing a descriptor it does not carry, and one that
	// carries a descriptor the operation does not take.
	raw, err := net.Dial("unix", f.socket)
	if err != nil {
		t.Fatal(err)
	}
	body := `{"v":1,"op":"attach","id":"x","size":10,"files":1}`
	hdr := make([]byte, 4)
	binary.BigEndian.PutUint32(hdr, uint32(len(body)))
	raw.Write(append(hdr, body...))
	raw.SetReadDeadline(time.Now().Add(3 * time.Second))
	var resp wire.Response
	if _, err := wire.Read(raw.(*net.UnixConn), &resp); err != nil || resp.Error == nil || resp.Error.Kind != wire.KindInvalid {
		t.Errorf("attach without its descriptor: %+v, %v", resp.Error, err)
	}
	raw.Close()
	// An owner that vanishes mid-handshake: half a frame with the memory.
	raw, _ = net.Dial("unix", f.socket)
	uc := raw.(*net.UnixConn)
	uc.WriteMsgUnix(hdr[:2], unix.UnixRights(int(mem.Fd())), nil)
	uc.Close()
	if len(f.sealer.List()) != 1 {
		t.Error("a bad attach left a shard")
	}
	c.Close()
	waitFor(t, "descriptors back to their count", func() bool { return openFDs(t) == before+2 }) // the two test memfds
	if n := f.sealer.Leases(); n != 0 {
		t.Errorf("%d leases left", n)
	}
}
