package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/testenv"
)

// standIn is a shell script that plays one prebuilt binary for the
// script's test: it logs its arguments and the driver library it was given.
const standIn = `#!/bin/sh
echo "$(basename "$0") $* lib=$VRAMSEAL_CUDA_LIBRARY" >> "$GPU_CHECK_TEST_LOG"
`

// TestGPUCheckScript runs scripts/gpu-check.sh over stand-ins for the
// prebuilt binaries, copied without their execute bits as a copy of the
// tree may leave them: the script makes them executable, hands every one
// the driver library the first found, runs the tests twice in one process,
// stops a step that hangs at its timeout, and writes the report file.
func TestGPUCheckScript(t *testing.T) {
	bash := testenv.Program(t, "bash")
	testenv.Program(t, "timeout")
	bin := t.TempDir()
	log := filepath.Join(t.TempDir(), "calls.log")
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("cuda.test", standIn)
	write("cuda-cgo.test", standIn)
	// The policy tests hang: their step must be stopped.
	write("policy.test", standIn+"exec sleep 120\n")
	write("gpucheck", standIn+`case " $* " in
*" -facts "*) echo "library: /drivers/libcuda.so.1"; echo "driver: CUDA 13.0"; echo "GPU 0: Stand-in GPU" ;;
*" -handoff "*) echo "PASS: hand-off: a second process imported the shard" ;;
*) while [ $# -gt 0 ]; do [ "$1" = -report ] && printf '| measure | GiB/s | note |\nPASS: GPU verify end to end: 40%%\n' > "$2"; shift; done ;;
esac
`)
	report := filepath.Join(t.TempDir(), "report.txt")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, filepath.Join("..", "..", "..", "..", "scripts", "gpu-check.sh"))
	cmd.Env = append(os.Environ(), "GPU_CHECK_BIN="+bin, "GPU_CHECK_REPORT="+report, "GPU_CHECK_STEP_TIMEOUT=3",
		"GPU_CHECK_TEST_LOG="+log, "PATH=/usr/bin:/bin") // no ptxas, nvidia-smi or compute-sanitizer on this PATH
	start := time.Now()
	out, err := cmd.CombinedOutput()
	took := time.Since(start)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("gpu-check.sh: %v (want exit status 1: the hanging step failed)\n%s", err, out)
	}
	if took > time.Minute {
		t.Errorf("took %s: the hanging step was not stopped at its 3 s timeout", took)
	}
	for _, name := range []string{"cuda.test", "gpucheck"} {
		if fi, err := os.Stat(filepath.Join(bin, name)); err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s not made executable: %v", name, err)
		}
	}
	calls, err := os.ReadFile(log)
	if err != nil {
		t.Fatalf("no binary ran: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(calls)), "\n")
	var sawCount2, sawTable bool
	for _, l := range lines {
		if strings.HasPrefix(l, "gpucheck -facts") {
			continue
		}
		if !strings.HasSuffix(l, "lib=/drivers/libcuda.so.1") {
			t.Errorf("a binary ran without the driver library found: %q", l)
		}
		if strings.HasPrefix(l, "cuda.test ") && strings.Contains(l, "-test.count=2") {
			sawCount2 = true
		}
		if strings.HasPrefix(l, "gpucheck ") && strings.Contains(l, "-library /drivers/libcuda.so.1") {
			sawTable = true
		}
	}
	if !sawCount2 || !sawTable {
		t.Errorf("tests twice in one process: %v; gpucheck given the library: %v\n%s", sawCount2, sawTable, calls)
	}
	for _, want := range []string{"timed out after 3s", "FAIL: policy tests", "PASS: cuda tests -test.count=2", "PASS: throughput targets", "PASS: hand-off and attach checks", "gpu-check: FAIL"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	rep, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"library: /drivers/libcuda.so.1", "| measure | GiB/s | note |", "PASS: GPU verify end to end", "PASS: hand-off: a second process imported the shard", "FAIL: policy tests", "gpu-check: FAIL"} {
		if !strings.Contains(string(rep), want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
}
