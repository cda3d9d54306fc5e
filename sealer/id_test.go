package sealer

import (
	"regexp"
	"strings"
	"testing"
)

var idRef = regexp.MustCompile(`^[A-Za-z0-9._-]{1,256}$`)

// validIDRef is the shard id rule (docs/config.md) written the obvious way.
func validIDRef(id string) bool {
	return idRef.MatchString(id) && !strings.HasPrefix(id, ".") && !strings.Contains(id, "..")
}

func TestCheckShardID(t *testing.T) {
	for _, ok := range []string{"a", "llama-00001", "model.v2_shard-3", "A.b", strings.Repeat("x", 256), "a.", "-a", "_"} {
		if err := CheckShardID(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", ".a", "a..b", "a/b", "a b", "ä", "a\x00", strings.Repeat("x", 257), "a\n"} {
		if err := CheckShardID(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzCheckShardID(f *testing.F) {
	for _, s := range []string{"a", "..", ".a", "a/b", "llama-00001", strings.Repeat("y", 257)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := CheckShardID(id)
		if (err == nil) != validIDRef(id) {
			t.Fatalf("CheckShardID(%q) = %v, reference says valid=%v", id, err, validIDRef(id))
		}
	})
}

func FuzzParseSeal(f *testing.F) {
	f.Add([]byte(`{"shard_id":"a","gpu_device":0,"vram_bytes":1,"digest":"d","leaf_size":4096,"content_sha256":"c","model_ref":"","sealed_at":"2026-01-01T00:00:00Z","worker_id":"w","signature":"hmac-sha256:00"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	g, _ := NewSigner([]byte(strings.Repeat("k", 32)))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSeal(data)
		if err != nil {
			return
		}
		if CheckShardID(s.ShardID) != nil {
			t.Fatalf("accepted a bad shard id %q", s.ShardID)
		}
		// A parsed record survives a round trip and signs deterministically.
		again, err := ParseSeal([]byte(s.JSON()))
		if err != nil || !sameSeal(s, again) {
			t.Fatalf("round trip: %v", err)
		}
		if g.Check(s) && !g.Check(again) {
			t.Fatal("signature check differs after a round trip")
		}
	})
}

func TestSignerRoundTrip(t *testing.T) {
	g, _ := NewSigner([]byte(strings.Repeat("k", 32)))
	other, _ := NewSigner([]byte(strings.Repeat("j", 32)))
	s := g.Sign(Seal{ShardID: "a", VRAMBytes: 10, Digest: "d", LeafSize: 4096})
	if !g.Check(s) || other.Check(s) {
		t.Fatal("a seal must check with its key and only with it")
	}
	// Length-prefixing: moving bytes between fields changes the MAC.
	a := g.Sign(Seal{ShardID: "ab", ModelRef: "c"})
	b := Seal{ShardID: "a", ModelRef: "bc", Signature: a.Signature}
	if g.Check(b) {
		t.Fatal("fields shifted across a boundary kept the signature valid")
	}
}
