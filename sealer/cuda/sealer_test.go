package cuda

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
)

// TestSealAndVerifyThroughSealer seals a file into the fake GPU through
// sealer.New and verifies it on the host and on the "GPU" (the fake's host
// version of the kernel), then shows a wrong leaf digest from the device is
// reported as a digest mismatch, not accepted.
func TestSealAndVerifyThroughSealer(t *testing.T) {
	f := newFake(t, fakeFull)
	f.set("total", 256<<20)
	devs := open(t, f, func(o *Options) { o.StagingBytes = 64 << 10 })
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "model.safetensors")
	data := randomBytes(t, 3<<20+4321)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := sealer.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	rec := &audit.Recorder{}
	for _, mode := range []sealer.VerifyMode{sealer.VerifyHost, sealer.VerifyDevice} {
		t.Run(string(mode), func(t *testing.T) {
			rec.Reset()
			s, err := sealer.New(sealer.Config{
				WorkerID: "node-a", Devices: []sealer.Device{devs[0]}, Signer: signer, Emitter: rec,
				LeafSize: 16 << 10, VerifyMode: mode,
			})
			if err != nil {
				t.Fatal(err)
			}
			seal, err := s.Seal(ctx, sealer.SealRequest{ID: "shard-" + string(mode), Path: path, GPU: 0})
			if err != nil {
				t.Fatal(err)
			}
			want, err := sealer.DigestReader(bytes.NewReader(data), 16<<10)
			if err != nil {
				t.Fatal(err)
			}
			if seal.Digest != want.Digest || seal.ContentSHA256 != want.ContentSHA256 {
				t.Fatalf("seal digests differ from the file's")
			}
			launches := f.get("launches")
			res, err := s.Verify(ctx, seal.ShardID)
			if err != nil || !res.Intact() {
				t.Fatalf("verify: %+v, %v", res, err)
			}
			if ran := f.get("launches") > launches; ran != (mode == sealer.VerifyDevice) {
				t.Errorf("mode %s: kernel launched = %v", mode, ran)
			}
			if mode == sealer.VerifyDevice {
				f.set("corrupt_kernel", 1)
				res, err := s.Verify(ctx, seal.ShardID)
				f.set("corrupt_kernel", 0)
				if err == nil || res.Result != audit.ReasonDigestMismatch || res.BadChunks != int64(sealer.LeafCount(uint64(len(data)), 16<<10)) || res.FirstBadOffset != 0 {
					t.Errorf("wrong device digests: %+v, %v", res, err)
				}
			}
			if _, err := s.Release(ctx, seal.ShardID); err != nil {
				t.Fatal(err)
			}
			if got := len(rec.Named(audit.NameVRAMDeallocated)); got != 1 {
				t.Errorf("%d deallocation events", got)
			}
		})
	}
	// The device keeps its digest buffers for the next verification; Close
	// frees them with everything else.
	if err := devs[0].Close(); err != nil {
		t.Fatal(err)
	}
	if used := f.get("used"); used != 0 {
		t.Errorf("%d bytes still allocated on the fake GPU", used)
	}
}
