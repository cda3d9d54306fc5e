package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ebitengine/purego"

	"github.com/vramseal/vramseal/sealer/cuda"
)

// TestRunOnFakeDriver runs the whole check against the fake driver of
// sealer/cuda (small sizes), so the program the GPU machine runs has run
// here: every probe, both sealers, both verification modes and the table.
// The fake's rates mean nothing, so missed targets are allowed.
func TestRunOnFakeDriver(t *testing.T) {
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	if out, err := exec.Command("gcc", "-shared", "-fPIC", "-O2", "-o", lib,
		filepath.Join("..", "..", "testdata", "fakecuda.c"), "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("building the fake driver: %v\n%s", err, out)
	}
	// A 256 MiB fake GPU keeps the probes (1/8 of the memory) small.
	h, err := purego.Dlopen(lib, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		t.Fatal(err)
	}
	defer purego.Dlclose(h)
	var set func(string, int64)
	purego.RegisterLibFunc(&set, h, "fakecuda_set")
	set("total", 256<<20)
	var out bytes.Buffer
	report := filepath.Join(t.TempDir(), "report.txt")
	err = run(context.Background(), &out, config{total: 48 << 20, shards: 3, leaf: 16 << 10, dir: t.TempDir(), lib: lib, workers: 2, inFlight: 2, report: report})
	if err != nil && !errors.Is(err, errTargets) {
		t.Fatalf("%v\n%s", err, out.String())
	}
	table := []string{"| device-to-device copy (ceiling) | ", "bytes copied per second", "| verify on the GPU through the sealer |",
		"| GPU verify, kernel only |", "| GPU verify, end to end (pipelined) |", "2 in flight",
		"| verify on the host (read back + hash) |", "| seal, file -> VRAM (best of 2 runs) |",
		"GPU verify end to end >= 15% of device copy bytes copied per second: ",
		"GPU verify end to end >= 30% of device copy bytes copied per second: ", "GOAL ", "leaf size 16384 bytes"}
	for _, want := range append([]string{"Fake CUDA GPU 0", "driver library: " + lib, "leaf kernel over 32 MiB by leaf size"}, table...) {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// The report file holds the table and the PASS/FAIL lines.
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range table {
		if !strings.Contains(string(b), want) {
			t.Errorf("report lacks %q:\n%s", want, b)
		}
	}
	if !regexp.MustCompile(`(?m)^(PASS|FAIL): seal >= 80% of one-stream SHA-256: \d+%$`).Match(b) {
		t.Errorf("report lacks the PASS/FAIL lines:\n%s", b)
	}
	t.Log("\n" + out.String())

	var facts bytes.Buffer
	if err := printFacts(context.Background(), &facts, config{lib: lib, workers: 1, inFlight: 1}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"library: " + lib + "\n", "driver: CUDA 13.0\n", "GPU 0: Fake CUDA GPU 0 (GPU-", "limitation: MIG instance unknown"} {
		if !strings.Contains(facts.String(), want) {
			t.Errorf("facts lack %q:\n%s", want, facts.String())
		}
	}
}

func TestKernelBusy(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := time.Millisecond
	res := []cuda.TreeResult{
		{KernelStart: t0.Add(5 * ms), Kernel: 10 * ms}, // 5-15
		{KernelStart: t0, Kernel: 8 * ms},              // 0-8, overlapping the first
		{KernelStart: t0.Add(20 * ms), Kernel: 2 * ms}, // 20-22
		{KernelStart: t0.Add(21 * ms), Kernel: ms},     // inside the last
	}
	if got := kernelBusy(res); got != 17*ms {
		t.Errorf("kernelBusy = %s, want 17ms", got)
	}
	if res[0].KernelStart != t0.Add(5*ms) {
		t.Error("kernelBusy reordered its argument")
	}
}
