package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/internal/testenv"
)

// The worked example of docs/digest.md, run with coreutils, gives the same
// digest as `vramseal-agent digest`.
func TestDigestDocExample(t *testing.T) {
	testenv.Program(t, "bash")
	doc, err := os.ReadFile("../../docs/digest.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- digest-example.*?```sh\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/digest.md has no digest-example block")
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", "-eu", "-c", string(m[1]))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("example script: %v\n%s", err, out)
	}
	shell := strings.TrimSpace(string(out))

	var stdout, stderr bytes.Buffer
	code := runCLI(context.Background(), []string{"digest", "--leaf-size", "4096", filepath.Join(dir, "example.bin")}, cli{stdout: &stdout, stderr: &stderr})
	if code != 0 {
		t.Fatalf("digest exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "digest          sha256-tree-v1:"+shell+"\n") {
		t.Fatalf("shell computed %s, agent printed:\n%s", shell, stdout.String())
	}
	if !bytes.Contains(doc, []byte(shell)) {
		t.Fatalf("docs/digest.md does not show the digest %s its example computes", shell)
	}
}

func TestDigestBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	_ = os.WriteFile(empty, nil, 0o600)
	for name, args := range map[string][]string{
		"missing":   {"digest", filepath.Join(dir, "nope")},
		"directory": {"digest", dir},
		"empty":     {"digest", empty},
		"leaf size": {"digest", "--leaf-size", "1000", empty},
		"no file":   {"digest"},
	} {
		var stdout, stderr bytes.Buffer
		if code := runCLI(context.Background(), args, cli{stdout: &stdout, stderr: &stderr}); code != exitUsage {
			t.Errorf("%s: exit %d, want %d", name, code, exitUsage)
		}
		if stderr.Len() == 0 {
			t.Errorf("%s: no error message", name)
		}
	}
}
