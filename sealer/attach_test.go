package sealer_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer"
)

const shrinkGrow = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW

// TestAttachSealsInPlace: attached memory is sealed as it is, verified in
// place, caught when its owner changes it, never handed to others, and
// released when its owner detaches or goes away.
func TestAttachSealsInPlace(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	content := data(5*leaf+3, 4)
	f, m := testenv.Memfd(t, content, shrinkGrow)
	sum := sha256.Sum256(content)
	owner := audit.Caller{UID: 1000, GID: 1000, PID: 77, Executable: "/usr/bin/python3"}
	a, err := e.s.Attach(ctx, sealer.AttachRequest{ID: "att", GPU: 0, Memory: f, Size: uint64(len(content)),
		ExpectedSHA256: hex.EncodeToString(sum[:]), ModelRef: "engine@1", Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sealer.DigestReader(strings.NewReader(string(content)), leaf)
	if a.Seal.Digest != want.Digest || a.Seal.ContentSHA256 != want.ContentSHA256 || a.Seal.VRAMBytes != uint64(len(content)) {
		t.Fatalf("attached seal %+v, want the digests of the content", a.Seal)
	}
	if st, _ := e.s.Shard("att"); st.Origin != sealer.OriginAttached || st.Owner == nil || *st.Owner != owner {
		t.Errorf("origin %q, owner %v", st.Origin, st.Owner)
	}
	if ev := e.rec.Named(audit.NameVRAMSealed); len(ev) != 1 || ev[0].(audit.VRAMSealed).Origin != sealer.OriginAttached {
		t.Errorf("vram.sealed %v", ev)
	}
	if res, err := e.s.Verify(ctx, "att"); err != nil || !res.Intact() {
		t.Fatalf("verify in place: %+v, %v", res, err)
	}
	if _, err := e.s.Open(ctx, "att", consumer, nil); sealer.KindOf(err) != sealer.KindInvalid {
		t.Errorf("an attached shard was handed to another consumer: %v", err)
	}
	m[leaf+1] ^= 0x40 // the owner changes its memory while attached
	res, _ := e.s.Verify(ctx, "att")
	if res.Intact() || res.FirstBadOffset != leaf {
		t.Fatalf("a change by the owner: %+v", res)
	}
	if n := len(e.rec.Named(audit.NameSealVerificationFailed)); n != 1 {
		t.Errorf("%d CRITICAL events", n)
	}
	if _, err := a.OwnerExited(ctx); err != nil {
		t.Fatalf("owner exited with the shard failed: %v", err)
	}
	if _, err := a.Detach(ctx); sealer.KindOf(err) != sealer.KindNotFound {
		t.Errorf("detach after release: %v", err)
	}
	d := e.rec.Named(audit.NameVRAMDeallocated)
	if len(d) != 1 || d[0].(audit.VRAMDeallocated).Reason != audit.DeallocOwnerExited {
		t.Errorf("deallocation %v", d)
	}
	if e.devs[0].LiveAllocations() != 0 {
		t.Error("the agent kept a mapping of the owner's memory")
	}
	if m[0] != content[0] {
		t.Error("the owner's memory changed")
	}

	// Detach, then the same id again.
	a2, err := e.s.Attach(ctx, sealer.AttachRequest{ID: "att", GPU: 0, Memory: f, Size: 2 * leaf, Owner: owner})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Detach(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e.rec.Named(audit.NameVRAMDeallocated); d[len(d)-1].(audit.VRAMDeallocated).Reason != audit.DeallocDetached {
		t.Errorf("detach reason %q", d[len(d)-1].(audit.VRAMDeallocated).Reason)
	}
}

func TestAttachBadInput(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	content := data(2*leaf, 5)
	sealed, _ := testenv.Memfd(t, content, shrinkGrow)
	unsealed, _ := testenv.Memfd(t, content, 0)
	plain, err := os.CreateTemp(t.TempDir(), "plain")
	if err != nil {
		t.Fatal(err)
	}
	plain.Write(content)
	if _, err := e.s.Attach(ctx, sealer.AttachRequest{ID: "taken", GPU: 0, Memory: sealed, Size: leaf}); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		req  sealer.AttachRequest
		kind sealer.Kind
		msg  string
	}{
		"no seals":          {sealer.AttachRequest{ID: "x", Memory: unsealed, Size: leaf}, sealer.KindInvalid, "not sealed against shrinking and growing"},
		"not a memfd":       {sealer.AttachRequest{ID: "x", Memory: plain, Size: leaf}, sealer.KindInvalid, "not a memfd"},
		"smaller than said": {sealer.AttachRequest{ID: "x", Memory: sealed, Size: 3 * leaf}, sealer.KindInvalid, "fewer than the"},
		"unknown GPU":       {sealer.AttachRequest{ID: "x", GPU: 3, Memory: sealed, Size: leaf}, sealer.KindInvalid, "no GPU 3"},
		"duplicate id":      {sealer.AttachRequest{ID: "taken", Memory: sealed, Size: leaf}, sealer.KindExists, "already sealed"},
		"bad id":            {sealer.AttachRequest{ID: "../x", Memory: sealed, Size: leaf}, sealer.KindInvalid, "shard id"},
		"no size":           {sealer.AttachRequest{ID: "x", Memory: sealed}, sealer.KindInvalid, "no memory given"},
		"pinned mismatch":   {sealer.AttachRequest{ID: "x", Memory: sealed, Size: leaf, ExpectedSHA256: strings.Repeat("ab", 32)}, sealer.KindIntegrity, "expected abab"},
	} {
		_, err := e.s.Attach(ctx, c.req)
		if sealer.KindOf(err) != c.kind || err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v (kind %v), want %v containing %q", name, err, sealer.KindOf(err), c.kind, c.msg)
		}
	}
	if n := e.devs[0].LiveAllocations(); n != 1 || len(e.s.List()) != 1 {
		t.Errorf("bad input left %d allocations, %d shards", n, len(e.s.List()))
	}
}
