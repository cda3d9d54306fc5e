// Package testenv is how tests say that something they need is missing.
//
// A test that needs a tool (promtool, Prometheus, the OTel Collector, ptxas,
// bash, systemd-analyze…), root or a kernel feature calls Missing when it is
// absent. By default that skips the test; under VRAMSEAL_REQUIRE_TOOLS=1,
// which `make test` and CI set, it fails it, so a machine that lacks a tool
// cannot pass in silence. Only a test that needs a real GPU may skip there:
// it calls NoGPU.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// RequireEnv is the environment variable under which Missing fails.
const RequireEnv = "VRAMSEAL_REQUIRE_TOOLS"

// Required reports whether a missing tool fails the test (VRAMSEAL_REQUIRE_TOOLS=1).
func Required() bool { return os.Getenv(RequireEnv) == "1" }

// Missing skips the test, saying why; under VRAMSEAL_REQUIRE_TOOLS=1 it fails it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if Required() {
		t.Fatalf("missing under "+RequireEnv+"=1: "+format, args...)
	}
	t.Skipf(format, args...)
}

// Tool returns the path in the environment variable env (a pinned tool that
// `make test` builds and exports), or reports it Missing.
func Tool(t testing.TB, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		Missing(t, "%s is not set: run `make test`, which builds the pinned tool and exports it", env)
	}
	return p
}

// Program returns the path of a program found on PATH, or reports it Missing.
func Program(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not on PATH: `make test` installs it", name)
	}
	return p
}

// Root reports Missing unless the test runs as root.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "needs root: %s", why)
	}
}

// NoGPU skips a test that needs a real NVIDIA GPU and driver, in every
// mode: these tests run on a GPU machine through `make gpu-check`.
func NoGPU(t testing.TB, err error) {
	t.Helper()
	t.Skipf("no NVIDIA GPU here (%v): this test runs on a GPU machine, see make gpu-check", err)
}

// OpenUp makes dir and its parents up to the temporary folder
// world-searchable (0755), so a process under another uid reaches a
// socket or binary there.
func OpenUp(t testing.TB, dir string) {
	t.Helper()
	root := filepath.Clean(os.TempDir())
	for d := filepath.Clean(dir); strings.HasPrefix(d, root) && d != root; d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBinaryForAnyUser copies the running test binary where a process under
// another uid can execute it, and returns its path.
func TestBinaryForAnyUser(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	data, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, filepath.Base(os.Args[0]))
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	OpenUp(t, dir)
	return exe
}

// Memfd returns a memfd holding data, created with MFD_ALLOW_SEALING and
// sealed with seals (F_SEAL_* bits, 0 for none), and its owner's writable
// shared mapping: the memory an engine attaches. Both go at the end of the
// test.
func Memfd(t testing.TB, data []byte, seals int) (*os.File, []byte) {
	t.Helper()
	fd, err := unix.MemfdCreate("engine", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "engine")
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(fd, 0, len(data), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	copy(m, data)
	if seals != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
	}
	return f, m
}
