package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// TestMain lets the test binary serve as the check's second process.
func TestMain(m *testing.M) {
	if cuda.IsReader() {
		os.Exit(cuda.ServeReader())
	}
	if ok, err := role(context.Background(), os.Stdout); ok {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHandoffOnFakeDriver runs the hand-off and attach checks on the fake
// driver, twice: where read-only access is granted (the write through it
// is refused) and where it is refused (the write takes effect and
// verification catches it).
func TestHandoffOnFakeDriver(t *testing.T) {
	gcc := testenv.Program(t, "gcc")
	lib := filepath.Join(t.TempDir(), "libcuda.so.1")
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", lib,
		filepath.Join("..", "..", "testdata", "fakecuda.c"), "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("building the fake driver: %v\n%s", err, out)
	}
	for _, c := range []struct {
		refuse bool
		want   []string
	}{
		{false, []string{"access granted to the importer: read-only", "PASS: write through the imported mapping refused (CUDA_ERROR_ILLEGAL_ADDRESS"}},
		{true, []string{"access granted to the importer: read-write", "PASS: write through the imported mapping took effect, and verification caught it (digest_mismatch)"}},
	} {
		t.Run(fmt.Sprintf("refuse_read_only=%v", c.refuse), func(t *testing.T) {
			if c.refuse {
				t.Setenv("FAKECUDA_REFUSE_READ_ONLY", "1")
			}
			// Each run loads its own copy: the fake's settings are per library.
			copyLib := filepath.Join(t.TempDir(), "libcuda.so.1")
			b, _ := os.ReadFile(lib)
			if err := os.WriteFile(copyLib, b, 0o755); err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err := handoffCheck(context.Background(), &out, config{lib: copyLib, workers: 2, inFlight: 1, dir: t.TempDir()})
			if err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			for _, want := range append(c.want, "PASS: hand-off: a second process imported the shard and read the sealed bytes",
				"PASS: attach: a second process's VMM allocation attached and sealed", "PASS: attach: a byte changed by the owner was detected (digest_mismatch",
				"PASS: attach: released when the owner exited") {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, out.String())
				}
			}
			t.Log("\n" + out.String())
		})
	}
}
