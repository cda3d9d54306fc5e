package sealer

import (
	"strings"
	"testing"
	"time"
)

// A rotation: seals signed with the old key still check once the new key
// signs; new seals name the new key; a key id changed after signing, or a
// seal of the new key under the old Signer, does not check.
func TestSignerRotation(t *testing.T) {
	oldKey := SigningKey{ID: "00000000000000aa", Key: []byte(strings.Repeat("o", 32))}
	newKey := SigningKey{ID: "00000000000000bb", Key: []byte(strings.Repeat("n", 32))}
	before, err := NewRotatingSigner([]SigningKey{oldKey})
	if err != nil {
		t.Fatal(err)
	}
	seal := Seal{ShardID: "a", VRAMBytes: 10, Digest: "d", LeafSize: 4096, SealedAt: time.Unix(1700000000, 0), WorkerID: "w"}
	old := before.Sign(seal)
	if old.KeyID != oldKey.ID || !before.Check(old) {
		t.Fatalf("seal before the rotation: %+v", old)
	}
	// Signed before key ids existed: checks with the key that made it.
	legacySigner, _ := NewSigner(oldKey.Key)
	legacy := legacySigner.Sign(seal)
	if legacy.KeyID != "" {
		t.Fatalf("a key without id put %q in the record", legacy.KeyID)
	}

	after, err := NewRotatingSigner([]SigningKey{newKey, oldKey})
	if err != nil {
		t.Fatal(err)
	}
	if !after.Check(old) || !after.Check(legacy) {
		t.Fatal("after the rotation a seal of the old key no longer checks")
	}
	fresh := after.Sign(seal)
	if fresh.KeyID != newKey.ID || !after.Check(fresh) {
		t.Fatalf("seal after the rotation: %+v", fresh)
	}
	if before.Check(fresh) {
		t.Fatal("the old key alone checked a seal of the new key")
	}
	renamed := old
	renamed.KeyID = newKey.ID
	if after.Check(renamed) {
		t.Fatal("a seal whose key id was changed still checks")
	}
	dropped, _ := NewRotatingSigner([]SigningKey{newKey})
	if dropped.Check(old) {
		t.Fatal("a seal of a key no longer listed still checks")
	}
	if _, err := NewRotatingSigner(nil); err == nil {
		t.Fatal("a Signer without keys was made")
	}
	if p, err := ParseSeal([]byte(fresh.JSON())); err != nil || p.KeyID != newKey.ID || !after.Check(p) {
		t.Fatalf("seal record JSON round trip: %+v %v", p, err)
	}
}
