package sealer_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

const leaf = sealer.MinLeafSize

type env struct {
	s    *sealer.Sealer
	devs []*simgpu.Device
	rec  *audit.Recorder
	dir  string
}

func newEnv(t *testing.T, gpus int, mem uint64, mode sealer.VerifyMode) *env {
	t.Helper()
	devs, err := simgpu.New(simgpu.Config{GPUs: gpus, MemoryBytes: mem, Properties: simgpu.DefaultProperties()})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	rec := &audit.Recorder{}
	s, err := sealer.New(sealer.Config{
		WorkerID: "node-test", Devices: simgpu.Devices(devs), Signer: signer, Emitter: rec,
		LeafSize: leaf, VerifyMode: mode, CriticalWait: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &env{s: s, devs: devs, rec: rec, dir: t.TempDir()}
}

func (e *env) file(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func data(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed ^ byte(i>>9)
	}
	return b
}

func names(evs []audit.Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Name())
	}
	return out
}

func TestSealVerifyRelease(t *testing.T) {
	e := newEnv(t, 2, 64<<20, sealer.VerifyHost)
	ctx := context.Background()
	content := data(3*leaf+17, 1)
	path := e.file(t, "a.safetensors", content)
	sum := sha256.Sum256(content)

	seal, err := e.s.Seal(ctx, sealer.SealRequest{ID: "llama-00001", Path: path, GPU: 1, ExpectedSHA256: hex.EncodeToString(sum[:]), ModelRef: "hf://example/llama@abc"})
	if err != nil {
		t.Fatal(err)
	}
	if seal.ContentSHA256 != hex.EncodeToString(sum[:]) || seal.VRAMBytes != uint64(len(content)) || seal.GPUDevice != 1 || seal.LeafSize != leaf || seal.WorkerID != "node-test" {
		t.Fatalf("seal = %+v", seal)
	}
	d, _ := sealer.DigestReader(bytes.NewReader(content), leaf)
	if seal.Digest != d.Digest {
		t.Fatalf("seal digest %s, file digest %s", seal.Digest, d.Digest)
	}
	if got := names(e.rec.Events()); fmt.Sprint(got) != "[vram.allocated vram.sealed]" {
		t.Fatalf("events %v", got)
	}
	alloc := e.rec.Events()[0].(audit.VRAMAllocated)
	if alloc.RequestedBytes != uint64(len(content)) || alloc.UsedAfter != uint64(len(content)) || alloc.GPUDevice != 1 {
		t.Fatalf("allocated event %+v", alloc)
	}
	sealed := e.rec.Events()[1].(audit.VRAMSealed)
	if sealed.Digest != seal.Digest || sealed.SealSignature != seal.Signature || sealed.ID == "" || sealed.WorkerID != "node-test" {
		t.Fatalf("sealed event %+v", sealed)
	}
	carried, err := sealer.ParseSeal([]byte(sealed.Seal))
	if err != nil || carried != seal {
		t.Fatalf("the event's seal record %v differs from the seal (%v)", carried, err)
	}
	if tel := e.devs[1].Telemetry(); tel.UsedBytes != uint64(len(content)) {
		t.Fatalf("GPU 1 used %d", tel.UsedBytes)
	}

	e.rec.Reset()
	res, err := e.s.Verify(ctx, "llama-00001")
	if err != nil || !res.Intact() || res.Bytes != uint64(len(content)) {
		t.Fatalf("verify = %+v, %v", res, err)
	}
	ev := e.rec.Named(audit.NameSealVerified)
	if len(ev) != 1 || ev[0].(audit.SealVerified).Digest != seal.Digest {
		t.Fatalf("events %v", names(e.rec.Events()))
	}
	st, _ := e.s.Shard("llama-00001")
	if st.State != sealer.StateSealed || st.LastResult != "ok" || st.LastVerifiedAt.IsZero() {
		t.Fatalf("status %+v", st)
	}

	e.rec.Reset()
	rr, err := e.s.Release(ctx, "llama-00001")
	if err != nil || rr.FreedBytes != uint64(len(content)) || rr.RemainingUsed != 0 {
		t.Fatalf("release = %+v, %v", rr, err)
	}
	dealloc := e.rec.Named(audit.NameVRAMDeallocated)
	if len(dealloc) != 1 || dealloc[0].(audit.VRAMDeallocated).FreedBytes != uint64(len(content)) {
		t.Fatalf("events %v", names(e.rec.Events()))
	}
	if e.devs[1].LiveAllocations() != 0 || len(e.s.List()) != 0 {
		t.Fatal("release left memory or state behind")
	}
	if _, err := e.s.Verify(ctx, "llama-00001"); sealer.KindOf(err) != sealer.KindNotFound {
		t.Fatalf("verify after release: %v", err)
	}
}

func TestRemainingUsedCountsOtherShards(t *testing.T) {
	e := newEnv(t, 1, 64<<20, sealer.VerifyHost)
	ctx := context.Background()
	for i, n := range []int{leaf, 2*leaf + 1} {
		if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: fmt.Sprint("s", i), Path: e.file(t, fmt.Sprint(i), data(n, byte(i))), GPU: 0}); err != nil {
			t.Fatal(err)
		}
	}
	rr, err := e.s.Release(ctx, "s0")
	if err != nil || rr.RemainingUsed != 2*leaf+1 {
		t.Fatalf("release = %+v, %v", rr, err)
	}
}

// A bit flipped anywhere is found, and its chunk located, in both modes.
func TestBitFlipFoundAndLocated(t *testing.T) {
	n := 5*leaf + 100
	for _, mode := range []sealer.VerifyMode{sealer.VerifyHost, sealer.VerifyDevice} {
		for _, off := range []uint64{0, uint64(n - 1), leaf - 1, leaf, leaf + 1, 4 * leaf, uint64(n) / 2} {
			t.Run(fmt.Sprintf("%s/offset=%d", mode, off), func(t *testing.T) {
				e := newEnv(t, 1, 16<<20, mode)
				ctx := context.Background()
				seal, err := e.s.Seal(ctx, sealer.SealRequest{ID: "shard", Path: e.file(t, "f", data(n, 3)), GPU: 0})
				if err != nil {
					t.Fatal(err)
				}
				if err := simgpu.Corrupt(ctx, e.s, "shard", off, 5); err != nil {
					t.Fatal(err)
				}
				e.rec.Reset()
				res, err := e.s.Verify(ctx, "shard")
				if sealer.KindOf(err) != sealer.KindIntegrity || res.Result != audit.ReasonDigestMismatch {
					t.Fatalf("verify = %+v, %v", res, err)
				}
				wantOff := int64(off / leaf * leaf)
				if res.FirstBadOffset != wantOff || res.BadChunks != 1 {
					t.Fatalf("first bad offset %d (want %d), bad chunks %d", res.FirstBadOffset, wantOff, res.BadChunks)
				}
				if res.ActualDigest == seal.Digest || res.ExpectedDigest != seal.Digest {
					t.Fatalf("digests %+v", res)
				}
				evs := e.rec.Named(audit.NameSealVerificationFailed)
				if len(evs) != 1 {
					t.Fatalf("events %v", names(e.rec.Events()))
				}
				f := evs[0].(audit.SealVerificationFailed)
				if f.Severity() != audit.SeverityCritical || f.Reason != audit.ReasonDigestMismatch || f.FirstBadOffset != wantOff ||
					f.BadChunks != 1 || f.ExpectedDigest != seal.Digest || f.ActualDigest != res.ActualDigest || f.WorkerID != "node-test" {
					t.Fatalf("event %+v", f)
				}
				if !res.AuditDurable {
					t.Fatal("recorder receipts are durable, result says not")
				}
				st, _ := e.s.Shard("shard")
				if st.State != sealer.StateFailed {
					t.Fatalf("state %s", st.State)
				}
				// Still failed, and reported again, at the next verification.
				e.rec.Reset()
				if _, err := e.s.Verify(ctx, "shard"); err == nil || len(e.rec.Named(audit.NameSealVerificationFailed)) != 1 {
					t.Fatal("second verification did not fail with its own event")
				}
			})
		}
	}
}

func TestManyFlipsCounted(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "shard", Path: e.file(t, "f", data(8*leaf, 3)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	for _, off := range []uint64{2*leaf + 5, 2*leaf + 6, 5 * leaf, 8*leaf - 1} {
		if err := simgpu.Corrupt(ctx, e.s, "shard", off, 0); err != nil {
			t.Fatal(err)
		}
	}
	res, _ := e.s.Verify(ctx, "shard")
	if res.FirstBadOffset != 2*leaf || res.BadChunks != 3 {
		t.Fatalf("result %+v", res)
	}
}

func TestVerifyDurabilityReported(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "shard", Path: e.file(t, "f", data(leaf, 3)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	_ = simgpu.Corrupt(ctx, e.s, "shard", 1, 0)
	e.rec.SetDurability(errors.New("disk full"))
	res, err := e.s.Verify(ctx, "shard")
	if err == nil || res.AuditDurable {
		t.Fatalf("result %+v, %v: want a failure whose record is not durable", res, err)
	}
}

func TestPresentedSeal(t *testing.T) {
	e := newEnv(t, 2, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	seal, err := e.s.Seal(ctx, sealer.SealRequest{ID: "shard", Path: e.file(t, "f", data(2*leaf, 9)), GPU: 1, ModelRef: "m@1"})
	if err != nil {
		t.Fatal(err)
	}
	presented, err := sealer.ParseSeal([]byte(seal.JSON()))
	if err != nil {
		t.Fatal(err)
	}
	if res, err := e.s.VerifySeal(ctx, presented); err != nil || !res.Intact() {
		t.Fatalf("genuine seal: %+v, %v", res, err)
	}
	altered := map[string]func(s *sealer.Seal){
		"shard_id":       func(s *sealer.Seal) { s.ShardID = "other" },
		"gpu_device":     func(s *sealer.Seal) { s.GPUDevice = 0 },
		"vram_bytes":     func(s *sealer.Seal) { s.VRAMBytes++ },
		"digest":         func(s *sealer.Seal) { s.Digest = "sha256-tree-v1:" + fmt.Sprintf("%064x", 1) },
		"leaf_size":      func(s *sealer.Seal) { s.LeafSize *= 2 },
		"content_sha256": func(s *sealer.Seal) { s.ContentSHA256 = fmt.Sprintf("%064x", 2) },
		"model_ref":      func(s *sealer.Seal) { s.ModelRef = "m@2" },
		"sealed_at":      func(s *sealer.Seal) { s.SealedAt = s.SealedAt.Add(time.Microsecond) },
		"worker_id":      func(s *sealer.Seal) { s.WorkerID = "node-b" },
		"signature": func(s *sealer.Seal) {
			last := s.Signature[len(s.Signature)-1]
			s.Signature = s.Signature[:len(s.Signature)-1] + map[bool]string{true: "1", false: "0"}[last == '0']
		},
		"no signature": func(s *sealer.Seal) { s.Signature = "hmac-sha256:" },
	}
	for field, alter := range altered {
		t.Run(field, func(t *testing.T) {
			p := presented
			alter(&p)
			if p == presented {
				t.Fatal("alteration changed nothing")
			}
			e.rec.Reset()
			res, err := e.s.VerifySeal(ctx, p)
			if sealer.KindOf(err) != sealer.KindIntegrity || res.Result != audit.ReasonSignatureInvalid {
				t.Fatalf("altered %s: %+v, %v", field, res, err)
			}
			evs := e.rec.Named(audit.NameSealVerificationFailed)
			if len(evs) != 1 || evs[0].(audit.SealVerificationFailed).Reason != audit.ReasonSignatureInvalid || evs[0].Severity() != audit.SeverityCritical {
				t.Fatalf("events %v", names(e.rec.Events()))
			}
			// A bad record says nothing about the shard it names: the
			// shard, still intact, is neither failed nor marked so.
			if st, err := e.s.Shard("shard"); err != nil || st.State != sealer.StateSealed || st.LastResult != sealer.ResultOK {
				t.Fatalf("a rejected presented record changed the held shard: %+v, %v", st, err)
			}
		})
	}
	// A genuine record of a released shard: its VRAM is gone.
	if _, err := e.s.Release(ctx, "shard"); err != nil {
		t.Fatal(err)
	}
	if res, err := e.s.VerifySeal(ctx, presented); err == nil || res.Result != audit.ReasonAllocationMissing {
		t.Fatalf("released: %+v, %v", res, err)
	}
}

func TestParseSealRejects(t *testing.T) {
	for _, in := range []string{``, `{}`, `[]`, `{"shard_id":"a"}`, `{"shard_id":"../x","signature":"s"}`, `{"shard_id":"a","signature":"s","extra":1}`, `{"shard_id":"a","signature":"s"} {}`} {
		if _, err := sealer.ParseSeal([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestContentDigestMismatch(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	wrong := fmt.Sprintf("%064x", 42)
	content := data(leaf+1, 1)
	_, err := e.s.Seal(ctx, sealer.SealRequest{ID: "shard", Path: e.file(t, "f", content), GPU: 0, ExpectedSHA256: wrong})
	var se *sealer.Error
	if !errors.As(err, &se) || se.Kind != sealer.KindIntegrity || se.Retryable() {
		t.Fatalf("err = %v", err)
	}
	if e.devs[0].LiveAllocations() != 0 || len(e.s.List()) != 0 || e.s.UsedBytes()[0] != 0 {
		t.Fatal("a refused seal left memory or state behind")
	}
	if got := fmt.Sprint(names(e.rec.Events())); got != "[vram.allocated vram.deallocated seal.verification_failed]" {
		t.Fatalf("events %s", got)
	}
	f := e.rec.Named(audit.NameSealVerificationFailed)[0].(audit.SealVerificationFailed)
	sum := sha256.Sum256(content)
	if f.Reason != audit.ReasonContentDigestMismatch || f.ExpectedDigest != wrong || f.ActualDigest != hex.EncodeToString(sum[:]) {
		t.Fatalf("event %+v", f)
	}
	// The id is free again.
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "shard", Path: e.file(t, "f", content), GPU: 0}); err != nil {
		t.Fatal(err)
	}
}

func TestInsufficientVRAM(t *testing.T) {
	e := newEnv(t, 1, 1<<20, sealer.VerifyHost)
	ctx := context.Background()
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "a", Path: e.file(t, "a", data(600<<10, 1)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	e.rec.Reset()
	_, err := e.s.Seal(ctx, sealer.SealRequest{ID: "b", Path: e.file(t, "b", data(600<<10, 2)), GPU: 0})
	if sealer.KindOf(err) != sealer.KindInsufficientVRAM || !sealer.IsRetryable(err) {
		t.Fatalf("err = %v", err)
	}
	evs := e.rec.Events()
	if len(evs) != 1 {
		t.Fatalf("events %v", names(evs))
	}
	f := evs[0].(audit.VRAMAllocationFailed)
	if f.Reason != audit.ReasonInsufficientVRAM || f.RequestedBytes != 600<<10 || f.AvailableBytes != (1<<20)-(600<<10) {
		t.Fatalf("event %+v", f)
	}
	if e.devs[0].LiveAllocations() != 1 {
		t.Fatal("the refused seal allocated")
	}
	// The device itself refusing (another process took the memory) is the same.
	e.devs[0].FailNextAlloc(fmt.Errorf("test: %w", sealer.ErrOutOfMemory))
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "c", Path: e.file(t, "c", data(10, 2)), GPU: 0}); sealer.KindOf(err) != sealer.KindInsufficientVRAM {
		t.Fatalf("err = %v", err)
	}
	e.devs[0].FailNextAlloc(errors.New("test: device exploded"))
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "c", Path: e.file(t, "c", data(10, 2)), GPU: 0}); sealer.KindOf(err) != sealer.KindDevice {
		t.Fatalf("err = %v", err)
	}
	last := e.rec.Events()[len(e.rec.Events())-1].(audit.VRAMAllocationFailed)
	if last.Reason != audit.ReasonDeviceError {
		t.Fatalf("event %+v", last)
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	good := e.file(t, "good", data(100, 1))
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "taken", Path: good, GPU: 0}); err != nil {
		t.Fatal(err)
	}
	e.rec.Reset()
	empty := e.file(t, "empty", nil)
	unreadable := e.file(t, "unreadable", data(10, 1))
	_ = os.Chmod(unreadable, 0)
	cases := map[string]sealer.SealRequest{
		"empty id":        {ID: "", Path: good},
		"bad char":        {ID: "a/b", Path: good},
		"dot start":       {ID: ".hidden", Path: good},
		"dot dot":         {ID: "a..b", Path: good},
		"too long":        {ID: string(bytes.Repeat([]byte("a"), 257)), Path: good},
		"duplicate":       {ID: "taken", Path: good},
		"zero length":     {ID: "z", Path: empty},
		"missing file":    {ID: "m", Path: filepath.Join(e.dir, "nope")},
		"directory":       {ID: "d", Path: e.dir},
		"no path":         {ID: "n"},
		"unknown gpu":     {ID: "g", Path: good, GPU: 3},
		"bad leaf size":   {ID: "l", Path: good, LeafSize: 5000},
		"bad sha256":      {ID: "h", Path: good, ExpectedSHA256: "xyz"},
		"unreadable file": {ID: "u", Path: unreadable},
	}
	for name, req := range cases {
		if name == "unreadable file" && os.Geteuid() == 0 {
			continue // root reads anything
		}
		_, err := e.s.Seal(ctx, req)
		want := sealer.KindInvalid
		if name == "duplicate" {
			want = sealer.KindExists
		}
		if sealer.KindOf(err) != want {
			t.Errorf("%s: err = %v, want kind %v", name, err, want)
		}
		if err != nil && sealer.IsRetryable(err) {
			t.Errorf("%s: bad input called retryable", name)
		}
	}
	if len(e.rec.Events()) != 0 || len(e.s.List()) != 1 || e.devs[0].LiveAllocations() != 1 {
		t.Fatalf("bad input changed state: events %v", names(e.rec.Events()))
	}
	for _, op := range []func() error{
		func() error { _, err := e.s.Verify(ctx, "unknown"); return err },
		func() error { _, err := e.s.Release(ctx, "unknown"); return err },
		func() error { return simgpu.Corrupt(ctx, e.s, "unknown", 0, 0) },
	} {
		if err := op(); sealer.KindOf(err) != sealer.KindNotFound {
			t.Errorf("unknown shard: %v", err)
		}
	}
	if err := simgpu.Corrupt(ctx, e.s, "taken", 100, 0); sealer.KindOf(err) != sealer.KindInvalid {
		t.Errorf("corrupt past the end: %v", err)
	}
}

func TestDeviceFaults(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "s", Path: e.file(t, "f", data(3*leaf, 1)), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	e.devs[0].SetFailReads(true)
	res, err := e.s.Verify(ctx, "s")
	if sealer.KindOf(err) != sealer.KindDevice || res.Result != audit.ReasonReadError || !sealer.IsRetryable(err) {
		t.Fatalf("read error: %+v, %v", res, err)
	}
	e.devs[0].SetFailReads(false)
	if res, err := e.s.Verify(ctx, "s"); err != nil || !res.Intact() {
		t.Fatalf("after reads recover: %+v, %v", res, err)
	}
	// The GPU falls off the bus and comes back reset: the allocation is gone.
	e.devs[0].SetLost(true)
	if res, _ := e.s.Verify(ctx, "s"); res.Result != audit.ReasonReadError {
		t.Fatalf("lost GPU: %+v", res)
	}
	e.devs[0].SetLost(false)
	res, err = e.s.Verify(ctx, "s")
	if sealer.KindOf(err) != sealer.KindIntegrity || res.Result != audit.ReasonAllocationMissing {
		t.Fatalf("reset GPU: %+v, %v", res, err)
	}
	if st, _ := e.s.Shard("s"); st.State != sealer.StateFailed {
		t.Fatalf("state %s", st.State)
	}
	// Release still works and accounts the bytes as freed.
	if _, err := e.s.Release(ctx, "s"); err != nil {
		t.Fatal(err)
	}
}

// blockingDevice holds reads until released, to catch a release in the
// middle of a verification.
type blockingDevice struct {
	*simgpu.Device
	entered chan struct{}
	once    sync.Once
}

func (b *blockingDevice) Read(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	b.once.Do(func() { close(b.entered) })
	<-ctx.Done()
	return ctx.Err()
}

func TestReleaseDuringVerification(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 16 << 20})
	bd := &blockingDevice{Device: devs[0], entered: make(chan struct{})}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	rec := &audit.Recorder{}
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: []sealer.Device{bd}, Signer: signer, Emitter: rec, LeafSize: leaf})
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "f")
	_ = os.WriteFile(p, data(4*leaf, 1), 0o600)
	ctx := context.Background()
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "s", Path: p, GPU: 0}); err != nil {
		t.Fatal(err)
	}
	done := make(chan sealer.VerifyResult)
	go func() {
		res, err := s.Verify(ctx, "s")
		if sealer.KindOf(err) != sealer.KindCancelled {
			t.Errorf("verify err = %v, want cancelled", err)
		}
		done <- res
	}()
	<-bd.entered
	if _, err := s.Release(ctx, "s"); err != nil {
		t.Fatal(err)
	}
	if res := <-done; res.Result != sealer.ResultCancelled {
		t.Fatalf("result %+v", res)
	}
	if len(rec.Named(audit.NameSealVerificationFailed)) != 0 || len(rec.Named(audit.NameVRAMDeallocated)) != 1 {
		t.Fatalf("events %v", names(rec.Events()))
	}
	if devs[0].LiveAllocations() != 0 {
		t.Fatal("allocation not freed")
	}
}

// Many shards sealed, verified and released at once on several GPUs; the
// capacity is never exceeded and every byte is accounted for.
func TestConcurrentOperations(t *testing.T) {
	const gpus, mem = 3, 1 << 20
	e := newEnv(t, gpus, mem, sealer.VerifyHost)
	ctx := context.Background()
	var paths []string
	for i := range 8 {
		paths = append(paths, e.file(t, fmt.Sprint(i), data(100<<10+i*333, byte(i))))
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	sealed := 0
	stop := make(chan struct{})
	go func() { // watch capacity while everything runs
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, d := range e.devs {
				if tel := d.Telemetry(); tel.UsedBytes > tel.TotalBytes {
					t.Errorf("GPU %d over capacity: %d > %d", d.Index(), tel.UsedBytes, tel.TotalBytes)
				}
			}
		}
	}()
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				id := fmt.Sprintf("w%d-s%d", w, i)
				_, err := e.s.Seal(ctx, sealer.SealRequest{ID: id, Path: paths[(w+i)%len(paths)], GPU: (w + i) % gpus})
				if err != nil {
					if sealer.KindOf(err) != sealer.KindInsufficientVRAM {
						t.Errorf("seal %s: %v", id, err)
					}
					continue
				}
				mu.Lock()
				sealed++
				mu.Unlock()
				if res, err := e.s.Verify(ctx, id); err != nil || !res.Intact() {
					t.Errorf("verify %s: %+v %v", id, res, err)
				}
				if i%2 == 0 {
					if _, err := e.s.Release(ctx, id); err != nil {
						t.Errorf("release %s: %v", id, err)
					}
				}
			}
		}()
	}
	wg.Add(1)
	go func() { // verify-all racing with the rest
		defer wg.Done()
		for range 5 {
			if _, err := e.s.VerifyAll(ctx); err != nil {
				t.Errorf("verify all: %v", err)
			}
		}
	}()
	wg.Wait()
	close(stop)
	if sealed == 0 {
		t.Fatal("nothing sealed")
	}
	used := e.s.UsedBytes()
	for _, d := range e.devs {
		var want uint64
		for _, st := range e.s.List() {
			if st.Seal.GPUDevice == d.Index() {
				want += st.Seal.VRAMBytes
			}
		}
		if tel := d.Telemetry(); tel.UsedBytes != want || used[d.Index()] != want {
			t.Errorf("GPU %d: device says %d used, sealer %d, shards %d", d.Index(), tel.UsedBytes, used[d.Index()], want)
		}
	}
	if err := e.s.ReleaseAll(ctx); err != nil {
		t.Fatal(err)
	}
	for _, d := range e.devs {
		if d.LiveAllocations() != 0 {
			t.Errorf("GPU %d: allocations left after ReleaseAll", d.Index())
		}
	}
}

func TestAdmissionBlocks(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 2, MemoryBytes: 16 << 20})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	rec := &audit.Recorder{}
	s, _ := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: rec, Admission: denyGPU(1)})
	p := filepath.Join(t.TempDir(), "f")
	_ = os.WriteFile(p, data(100, 1), 0o600)
	if _, err := s.Seal(context.Background(), sealer.SealRequest{ID: "s", Path: p, GPU: 1}); sealer.KindOf(err) != sealer.KindPolicy {
		t.Fatalf("err = %v", err)
	}
	f := rec.Events()[0].(audit.VRAMAllocationFailed)
	if f.Reason != audit.ReasonPolicyBlocked || devs[1].LiveAllocations() != 0 {
		t.Fatalf("event %+v", f)
	}
	if _, err := s.Seal(context.Background(), sealer.SealRequest{ID: "s", Path: p, GPU: 0}); err != nil {
		t.Fatal(err)
	}
}

type denyGPU int

func (d denyGPU) Admit(_ context.Context, gpu int) error {
	if gpu == int(d) {
		return fmt.Errorf("GPU %d violates the VRAM-only policy", gpu)
	}
	return nil
}

func TestNewRejectsBadConfig(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 16 << 20})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	base := sealer.Config{Devices: simgpu.Devices(devs), Signer: signer, Emitter: &audit.Recorder{}}
	for name, mod := range map[string]func(c *sealer.Config){
		"no devices": func(c *sealer.Config) { c.Devices = nil },
		"no signer":  func(c *sealer.Config) { c.Signer = nil },
		"leaf":       func(c *sealer.Config) { c.LeafSize = 3 },
		"mode":       func(c *sealer.Config) { c.VerifyMode = "cloud" },
		"dup index":  func(c *sealer.Config) { c.Devices = append(c.Devices, c.Devices[0]) },
	} {
		c := base
		mod(&c)
		if _, err := sealer.New(c); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
	if _, err := sealer.NewSigner(make([]byte, 16)); err == nil {
		t.Error("short signing key accepted")
	}
}

// A caller may hand over the file it opened and checked; Seal reads that
// file, not whatever the path names by then.
func TestSealFromOpenedFile(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	p := e.file(t, "f", data(2*leaf, 1))
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Rename(p, p+".moved"); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(p, data(10, 9), 0o600) // the path now names other bytes
	seal, err := e.s.Seal(context.Background(), sealer.SealRequest{ID: "s", Path: p, File: f, GPU: 0})
	if err != nil || seal.VRAMBytes != 2*leaf {
		t.Fatalf("seal = %+v, %v", seal, err)
	}
}

// A paced verification asks its Pacer before every chunk it reads, so a
// large shard streams within the budget instead of bursting.
func TestVerifyPacedByChunk(t *testing.T) {
	for _, mode := range []sealer.VerifyMode{sealer.VerifyHost, sealer.VerifyDevice} {
		e := newEnv(t, 1, 64<<20, mode)
		ctx := context.Background()
		n := 10<<20 + 5
		if _, err := e.s.Seal(ctx, sealer.SealRequest{ID: "big", Path: e.file(t, "f", data(n, 1)), GPU: 0}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var calls []uint64
		pacer := func(ctx context.Context, b uint64) error {
			mu.Lock()
			calls = append(calls, b)
			mu.Unlock()
			return nil
		}
		if res, err := e.s.Verify(sealer.WithPacer(ctx, pacer), "big"); err != nil || !res.Intact() {
			t.Fatalf("%s: %+v %v", mode, res, err)
		}
		var sum uint64
		for _, c := range calls {
			sum += c
		}
		if sum != uint64(n) {
			t.Fatalf("%s: paced %d bytes, shard has %d", mode, sum, n)
		}
		if mode == sealer.VerifyHost && len(calls) < 3 {
			t.Fatalf("host verification paced in %d call(s): %v", len(calls), calls)
		}
		// A pacer that refuses stops the verification as cancelled, not failed.
		stop := func(ctx context.Context, b uint64) error { return context.Canceled }
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := e.s.Verify(sealer.WithPacer(cctx, stop), "big"); sealer.KindOf(err) != sealer.KindCancelled {
			t.Fatalf("%s: refused pacer: %v", mode, err)
		}
	}
}

// A model_ref the seal record could not carry faithfully is refused before
// anything is allocated: too long (its vram.sealed event would exceed what
// the audit spool records, and it would become a huge metric label), or
// not UTF-8 (JSON would alter it, so the printed record would not verify).
func TestSealRefusesBadModelRef(t *testing.T) {
	e := newEnv(t, 1, 16<<20, sealer.VerifyHost)
	ctx := context.Background()
	path := e.file(t, "f", data(leaf, 1))
	for name, ref := range map[string]string{
		"too long":  strings.Repeat("m", sealer.MaxModelRefLen+1),
		"not utf-8": "model\xff@1",
	} {
		_, err := e.s.Seal(ctx, sealer.SealRequest{ID: "s", Path: path, GPU: 0, ModelRef: ref})
		if sealer.KindOf(err) != sealer.KindInvalid {
			t.Errorf("%s: %v, want an invalid-input error", name, err)
		}
	}
	if n := e.devs[0].LiveAllocations(); n != 0 || len(e.rec.Events()) != 0 {
		t.Fatalf("a refused seal left %d allocations and events %v", n, names(e.rec.Events()))
	}
	seal, err := e.s.Seal(ctx, sealer.SealRequest{ID: "s", Path: path, GPU: 0, ModelRef: strings.Repeat("m", sealer.MaxModelRefLen)})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := sealer.ParseSeal([]byte(seal.JSON())); err != nil || p != seal {
		t.Fatalf("round trip: %v", err)
	}
}

// releasingEmitter releases the shard named in a vram.sealed event the
// moment that event is emitted: a release arriving as a seal completes.
type releasingEmitter struct {
	audit.Recorder
	s *sealer.Sealer
}

func (e *releasingEmitter) Emit(ctx context.Context, ev audit.Event) audit.Receipt {
	if sealed, ok := ev.(audit.VRAMSealed); ok {
		_, _ = e.s.Release(ctx, sealed.ShardID)
	}
	return e.Recorder.Emit(ctx, ev)
}

// The audit trail of a shard released as its seal completes reads in the
// order things happened: vram.sealed, then vram.deallocated; never a
// shard deallocated before it was sealed (which reads as still sealed).
func TestReleaseAsSealCompletesKeepsEventOrder(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 16 << 20})
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	em := &releasingEmitter{}
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: em, LeafSize: leaf})
	if err != nil {
		t.Fatal(err)
	}
	em.s = s
	p := filepath.Join(t.TempDir(), "f")
	_ = os.WriteFile(p, data(2*leaf, 1), 0o600)
	if _, err := s.Seal(context.Background(), sealer.SealRequest{ID: "s", Path: p, GPU: 0}); err != nil {
		t.Fatal(err)
	}
	got := names(em.Events())
	sealedAt, deallocAt := -1, -1
	for i, n := range got {
		switch n {
		case audit.NameVRAMSealed:
			sealedAt = i
		case audit.NameVRAMDeallocated:
			deallocAt = i
		}
	}
	if sealedAt < 0 || deallocAt >= 0 && deallocAt < sealedAt {
		t.Fatalf("events %v: vram.deallocated before vram.sealed", got)
	}
}

// slowWriteDevice holds writes until their context ends, like a copy into
// a GPU that is still running when the agent is told to stop.
type slowWriteDevice struct {
	*simgpu.Device
	entered chan struct{}
	once    sync.Once
}

func (d *slowWriteDevice) Write(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	d.once.Do(func() { close(d.entered) })
	<-ctx.Done()
	return ctx.Err()
}

// Shutdown cancels a seal in flight, waits for it to free what it took,
// refuses new seals and releases the sealed shards, each with its event.
func TestShutdownCancelsSealsInFlight(t *testing.T) {
	devs, _ := simgpu.New(simgpu.Config{GPUs: 2, MemoryBytes: 16 << 20})
	slow := &slowWriteDevice{Device: devs[1], entered: make(chan struct{})}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{1}, 32))
	rec := &audit.Recorder{}
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: []sealer.Device{devs[0], slow}, Signer: signer, Emitter: rec, LeafSize: leaf})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	_ = os.WriteFile(p, data(4*leaf, 1), 0o600)
	ctx := context.Background()
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "held", Path: p, GPU: 0}); err != nil {
		t.Fatal(err)
	}
	sealErr := make(chan error)
	go func() {
		_, err := s.Seal(ctx, sealer.SealRequest{ID: "inflight", Path: p, GPU: 1})
		sealErr <- err
	}()
	<-slow.entered
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-sealErr; sealer.KindOf(err) != sealer.KindCancelled {
		t.Fatalf("seal in flight: %v, want cancelled", err)
	}
	if devs[0].LiveAllocations() != 0 || devs[1].LiveAllocations() != 0 || len(s.List()) != 0 {
		t.Fatal("memory or shards left after Shutdown")
	}
	freed := map[string]bool{}
	for _, ev := range rec.Named(audit.NameVRAMDeallocated) {
		freed[ev.(audit.VRAMDeallocated).ShardID] = true
	}
	if !freed["held"] || !freed["inflight"] {
		t.Fatalf("deallocations %v, want both shards", freed)
	}
	if _, err := s.Seal(ctx, sealer.SealRequest{ID: "late", Path: p, GPU: 0}); sealer.KindOf(err) != sealer.KindCancelled {
		t.Fatalf("seal after Shutdown: %v", err)
	}
}
