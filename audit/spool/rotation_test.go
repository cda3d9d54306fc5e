package spool

import (
	"bytes"
	"testing"

	"github.com/vramseal/vramseal/audit"
)

// After a rotation the spool holds checkpoints of two secrets, each
// naming its own: verify checks them with both keys, and fails with the
// new one alone.
func TestCheckpointKeyRotation(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	s := openT(t, Config{Dir: dir, CheckpointKey: oldKey, CheckpointKeyID: "old"})
	for i := 0; i < 5; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	closeT(t, s)
	s = openT(t, Config{Dir: dir, CheckpointKey: newKey, CheckpointKeyID: "new"})
	for i := 5; i < 10; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	closeT(t, s)
	ids := map[any]int{}
	if err := ReadDir(dir, func(r Record) error {
		if r.Name == NameCheckpoint {
			ids[r.Field("key_id")]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if ids["old"] != 1 || ids["new"] < 1 {
		t.Fatalf("checkpoint key ids %v", ids)
	}
	rep, err := VerifyKeys(dir, [][]byte{newKey, oldKey})
	if err != nil || !rep.OK() || rep.Checkpoints < 2 {
		t.Fatalf("both keys: %+v %v", rep, err)
	}
	rep, err = VerifyKeys(dir, [][]byte{newKey})
	if err != nil || rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].Seq != 6 {
		t.Fatalf("the new key alone: %+v %v", rep.Problems, err)
	}
}
