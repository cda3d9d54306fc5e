package secret

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoad(t *testing.T) {
	key := bytes.Repeat([]byte("s"), 32)
	s, err := Load(write(t, key, 0o400))
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := s.Key(LabelSealSignature)
	k2, _ := s.Key(LabelAuditCheckpoint)
	if len(k1) != 32 || bytes.Equal(k1, k2) {
		t.Fatal("keys for different labels must differ")
	}
	if fmt.Sprint(s) != "[redacted]" || strings.Contains(fmt.Sprintf("%#v", s), "sss") {
		t.Fatal("secret printed")
	}
}

func TestLoadRefuses(t *testing.T) {
	cases := map[string]string{
		"too short":      write(t, []byte("short"), 0o600),
		"group readable": write(t, bytes.Repeat([]byte("s"), 32), 0o640),
		"world readable": write(t, bytes.Repeat([]byte("s"), 32), 0o604),
		"directory":      t.TempDir(),
	}
	for name, p := range cases {
		_, err := Load(p)
		if !errors.Is(err, ErrUnusable) {
			t.Errorf("%s: err = %v", name, err)
		} else if strings.Contains(err.Error(), "sss") {
			t.Errorf("%s: error shows the secret", name)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("missing file accepted")
	}
	if _, err := FromBytes([]byte("x")); err == nil {
		t.Error("short secret accepted")
	}
}
