package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/secret"
	"github.com/vramseal/vramseal/sealer"
)

func keyIDOf(t *testing.T, path string) string {
	t.Helper()
	s, err := secret.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.KeyID()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) stop() {
	e.t.Helper()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		e.t.Fatal(err)
	}
	if code := e.wait(30 * time.Second); code != 0 {
		e.t.Fatalf("exit status %d after SIGTERM", code)
	}
}

// TestSealSecretRotation: seal with the old secret, rotate
// (seal_secret_files: [new, old]), seal anew with the new one; the old seal
// and the old spool still verify, with the old secret listed.
func TestSealSecretRotation(t *testing.T) {
	e := newEnv(t)
	shard := e.shardFile("a.bin", 1<<20, 1)
	oldKey := filepath.Join(e.dir, "seal.key")
	e.writeConfig("sim")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	var oldSeal sealer.Seal
	if err := json.Unmarshal([]byte(e.mustCLI(0, "seal", shard, "--id", "a", "-o", "json")), &oldSeal); err != nil {
		t.Fatal(err)
	}
	if oldSeal.KeyID != keyIDOf(t, oldKey) {
		t.Fatalf("seal key id %q, want the secret's %q", oldSeal.KeyID, keyIDOf(t, oldKey))
	}
	e.stop()

	newKey := filepath.Join(e.dir, "new.key")
	if err := os.WriteFile(newKey, bytes.Repeat([]byte("fedcba9876543210"), 3), 0o600); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(e.config)
	b = bytes.Replace(b, []byte("seal_secret_file: "+oldKey), []byte("seal_secret_files: ["+newKey+", "+oldKey+"]"), 1)
	if err := os.WriteFile(e.config, b, 0o644); err != nil {
		t.Fatal(err)
	}
	e.log = &syncBuffer{}
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	var newSeal sealer.Seal
	if err := json.Unmarshal([]byte(e.mustCLI(0, "seal", shard, "--id", "a", "-o", "json")), &newSeal); err != nil {
		t.Fatal(err)
	}
	if newSeal.KeyID != keyIDOf(t, newKey) || newSeal.KeyID == oldSeal.KeyID {
		t.Fatalf("after the rotation the seal names key %q, want the new secret's %q", newSeal.KeyID, keyIDOf(t, newKey))
	}
	e.mustCLI(0, "verify", "a")
	e.stop()

	// The old seal record checks with the rotated keys, as the agent
	// loads them; not with the new secret alone.
	cfg, err := config.Load(e.config)
	if err != nil {
		t.Fatal(err)
	}
	_, signer, err := loadSecrets(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !signer.Check(oldSeal) || !signer.Check(newSeal) {
		t.Fatal("after the rotation the old or the new seal does not check")
	}
	cfg.SealSecretFiles = cfg.SealSecretFiles[:1]
	if _, only, _ := loadSecrets(cfg); only.Check(oldSeal) {
		t.Fatal("the new secret alone checked the old seal")
	}
	// The spool holds checkpoints of both secrets.
	spoolDir := filepath.Join(e.dir, "spool")
	out := e.mustCLI(0, "audit", "verify", "--spool.dir", spoolDir, "--seal.secret-file", newKey, "--seal.secret-file", oldKey)
	if !strings.Contains(out, "result     intact") || !strings.Contains(out, "checkpoint HMACs checked") {
		t.Fatalf("audit verify with both secrets:\n%s", out)
	}
	out = e.mustCLI(1, "audit", "verify", "--spool.dir", spoolDir, "--seal.secret-file", newKey)
	if !strings.Contains(out, "checkpoint HMAC does not verify") {
		t.Fatalf("audit verify with the new secret alone:\n%s", out)
	}
}
