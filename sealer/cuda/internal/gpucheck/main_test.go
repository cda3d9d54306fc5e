package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ebitengine/purego"
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
	err = run(context.Background(), &out, config{total: 48 << 20, shards: 3, leaf: 16 << 10, dir: t.TempDir(), lib: lib, workers: 2})
	if err != nil && !errors.Is(err, errTargets) {
		t.Fatalf("%v\n%s", err, out.String())
	}
	for _, want := range []string{"Fake CUDA GPU 0", "| device-to-device copy (ceiling) |", "| verify on the GPU (leaf kernel) |",
		"| verify on the host (read back + hash) |", "| seal, file -> VRAM (best of 2 runs) |", "GPU verify >= 15% of device copy",
		"leaf kernel over 32 MiB by leaf size", "leaf size 16384 bytes"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	t.Log("\n" + out.String())
}
