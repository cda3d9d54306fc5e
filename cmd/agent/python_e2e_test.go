package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer"
)

// pythonClientDir is the Python client's folder (client/python), from
// this package's folder.
const pythonClientDir = "../../client/python"

// python returns Debian's interpreter that make test exports, checked to
// import torch and numpy, or reports it Missing.
func python(t *testing.T) string {
	t.Helper()
	py := testenv.Tool(t, "VRAMSEAL_PYTHON")
	if out, err := exec.Command(py, "-c", "import torch, numpy").CombinedOutput(); err != nil {
		testenv.Missing(t, "%s cannot import torch and numpy (make test installs Debian's python3-torch and python3-numpy): %v\n%s", py, err, out)
	}
	return py
}

// runPython runs the Python client's interpreter in dir with the agent
// named in the environment, and returns its combined output.
func (e *env) runPython(py, dir, hsock string, timeout time.Duration, args ...string) (string, error) {
	e.t.Helper()
	abs, err := filepath.Abs(pythonClientDir)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"PYTHONPATH="+abs, "PYTHONDONTWRITEBYTECODE=1",
		"VRAMSEAL_TEST_AGENT="+e.bin, "VRAMSEAL_TEST_CONTROL_SOCKET="+e.socket,
		"VRAMSEAL_TEST_HANDOFF_SOCKET="+hsock, "VRAMSEAL_TEST_MODEL_DIR="+e.models)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// logLineWith reports whether one line of the agent's log holds every part.
func logLineWith(log string, parts ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		found := true
		for _, p := range parts {
			if !strings.Contains(line, p) {
				found = false
				break
			}
		}
		if found {
			return true
		}
	}
	return false
}

// TestPythonConsumer runs the Python client against the built agent: its
// unit tests (the live ones included), then a real PyTorch consumer
// (testdata/torch_consumer.py) that computes with a sealed shard's own
// memory, sees a debug corrupt in its tensors, and attaches a model it
// owns, then changes it and is caught.
func TestPythonConsumer(t *testing.T) {
	py := python(t)
	e := newEnv(t)
	hsock := filepath.Join(e.dir, "run", "handoff.sock")
	e.writeConfigWith("sim", fmt.Sprintf("sim: {gpus: 2, memory_bytes: 4294967296}\nhandoff: {socket: %s, shutdown_wait: 1s}\n", hsock))
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })

	abs, err := filepath.Abs(pythonClientDir)
	if err != nil {
		t.Fatal(err)
	}
	out, err := e.runPython(py, abs, hsock, 5*time.Minute, "-m", "unittest", "discover", "-s", "tests", "-v")
	if err != nil {
		t.Fatalf("the Python client's unit tests: %v\n%s", err, out)
	}
	if strings.Contains(out, "skipped 'no agent named") {
		t.Errorf("the live tests did not run against the agent:\n%s", out)
	}
	t.Logf("the Python client's unit tests:\n%s", lastLines(out, 3))

	script, err := filepath.Abs(filepath.Join("testdata", "torch_consumer.py"))
	if err != nil {
		t.Fatal(err)
	}
	out, err = e.runPython(py, e.dir, hsock, 5*time.Minute, script)
	t.Logf("torch_consumer.py:\n%s", out)
	if err != nil || !strings.Contains(out, "\nDONE") {
		t.Fatalf("the PyTorch consumer failed: %v", err)
	}

	// The agent's side of it: the corrupted shard and the changed owned
	// memory are each a CRITICAL record, and the owner's exit released its
	// attached shard, failed as it was.
	log := e.log.String()
	for _, id := range []string{"tiny", "tinyown-00000"} {
		if !logLineWith(log, "event=vramseal.seal.verification_failed", "shard_id="+id+" ", "event_severity=CRITICAL") {
			t.Errorf("no CRITICAL seal.verification_failed record for %s in the agent's log", id)
		}
	}
	e.waitFor("the exited owner's attached shard to be released", func() bool {
		_, ok := e.list()["tinyown-00000"]
		return !ok
	})
	if !logLineWith(e.log.String(), "event=vramseal.vram.deallocated", "shard_id=tinyown-00000 ", "reason=owner_exited") {
		t.Error("no vram.deallocated with reason=owner_exited for the attached shard")
	}
	if s, ok := e.list()["tiny"]; !ok || s.State != sealer.StateFailed {
		t.Errorf("the corrupted shard: %+v, want it kept in the failed state", s)
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
