package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/internal/secret"
)

func runCLIForTest(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := runCLI(context.Background(), args, cli{stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

// TestAuditVerify writes a spool, checks it intact (with and without the
// secret), then flips a bit and cuts the tail: the command exits 1 and
// names the file, offset and sequence number of the first break.
func TestAuditVerify(t *testing.T) {
	dir := t.TempDir()
	secretFile := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(secretFile, bytes.Repeat([]byte("k"), 40), 0o600); err != nil {
		t.Fatal(err)
	}
	sec, err := secret.Load(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sec.Key(secret.LabelAuditCheckpoint)
	log, _ := test.NewNullLogger()
	s, err := spool.Open(spool.Config{Dir: dir, CheckpointKey: key, SegmentBytes: 1024, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 40; i++ {
		s.Append(spool.EntryOf(audit.SealVerified{Header: audit.NewHeader(time.Now(), "n"), ShardID: "s", Digest: "d"}), false)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCLIForTest(t, "audit", "verify", "--spool.dir", dir, "--seal.secret-file", secretFile)
	if code != exitOK || !strings.Contains(out, "result     intact") || !strings.Contains(out, "checkpoint HMACs checked") {
		t.Fatalf("intact spool: exit %d\n%s%s", code, out, errs)
	}
	// Another secret: the checkpoints do not verify.
	other := filepath.Join(t.TempDir(), "other.key")
	_ = os.WriteFile(other, bytes.Repeat([]byte("x"), 40), 0o600)
	if code, out, _ := runCLIForTest(t, "audit", "verify", "--spool.dir", dir, "--seal.secret-file", other); code != exitFailed || !strings.Contains(out, "HMAC") {
		t.Fatalf("wrong secret: exit %d\n%s", code, out)
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	b, _ := os.ReadFile(segs[1])
	b[100] ^= 0x01
	_ = os.WriteFile(segs[1], b, 0o600)
	code, out, _ = runCLIForTest(t, "audit", "verify", "--spool.dir", dir)
	if code != exitFailed || !strings.Contains(out, "BROKEN     "+filepath.Base(segs[1])+": offset ") {
		t.Fatalf("flipped bit: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLIForTest(t, "audit", "verify", "--spool.dir", filepath.Join(dir, "missing")); code != exitUsage {
		t.Fatalf("missing folder: exit %d", code)
	}
	open := filepath.Join(t.TempDir(), "open.key")
	_ = os.WriteFile(open, bytes.Repeat([]byte("k"), 40), 0o644)
	if code, _, _ := runCLIForTest(t, "audit", "verify", "--spool.dir", dir, "--seal.secret-file", open); code != exitUsage {
		t.Fatalf("group-readable secret: exit %d", code)
	}
}
