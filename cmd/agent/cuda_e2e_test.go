package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// TestOpenCUDAEndToEnd: the built agent on the fake CUDA driver holds a
// declared shard as a VMM allocation and hands it out; `open` imports it
// with its own copy of the driver, read-only, and hashes the sealed bytes.
// A consumer process holding an import blocks release; --force and SIGTERM
// name it in still_mapped_by, as on the simulated GPU.
func TestOpenCUDAEndToEnd(t *testing.T) {
	gcc := testenv.Program(t, "gcc")
	e := newEnv(t)
	lib := filepath.Join(e.dir, "fakelib", "libcuda.so.1")
	if err := os.Mkdir(filepath.Dir(lib), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", lib, filepath.Join("..", "..", "sealer", "cuda", "testdata", "fakecuda.c"), "-lpthread").CombinedOutput(); err != nil {
		t.Fatalf("building the fake driver: %v\n%s", err, out)
	}
	path := e.shardFile("a.bin", 1<<20+3, 7)
	hsock := filepath.Join(e.dir, "run", "handoff.sock")
	e.writeConfigWith("cuda", fmt.Sprintf("cuda: {library: %s}\npolicy: {min_memory_bytes: 1024}\nhandoff: {socket: %s, shutdown_wait: 1s}\n", lib, hsock), "a:a.bin:0")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	out := e.mustCLI(0, "open", "a", "--handoff.socket", hsock, "--cuda.library", lib, "-o", "json")
	var res openResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	data, _ := os.ReadFile(path)
	sum := sha256.Sum256(data)
	if res.Memory != "cuda_vmm" || !res.ReadOnly || !res.Match || res.ContentSHA256 != hex.EncodeToString(sum[:]) || res.Verification != "ok" {
		t.Errorf("open of a CUDA shard: %+v", res)
	}
	if code, _, errOut := e.cli("open", "a", "--handoff.socket", hsock, "--cuda.library", filepath.Join(e.dir, "none.so")); code != exitFailed {
		t.Errorf("open without a CUDA driver: exit %d: %s", code, errOut)
	}

	holder, sc := e.holdLease(hsock, "a", "VRAMSEAL_TEST_HOLD_CUDA_LIB="+lib)
	pid := fmt.Sprint(holder.Process.Pid)
	if code, _, errOut := e.cli("release", "a"); code != exitFailed || !strings.Contains(errOut, "pid "+pid) {
		t.Fatalf("release of a leased CUDA shard: exit %d: %s", code, errOut)
	}
	if code, out, errOut := e.cli("release", "a", "--force"); code != exitOK || !strings.Contains(out+errOut, pid) {
		t.Errorf("forced release: exit %d: %s%s", code, out, errOut)
	}
	if !sc.Scan() || sc.Text() != "REVOKED" {
		t.Errorf("the consumer was not cut off: %q", sc.Text())
	}
	// SIGTERM with an imported lease open.
	bPath := e.shardFile("b.bin", 300000, 8)
	e.mustCLI(0, "seal", bPath, "--id", "b", "--gpu", "0")
	holder, _ = e.holdLease(hsock, "b", "VRAMSEAL_TEST_HOLD_CUDA_LIB="+lib)
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM with a CUDA lease open", code)
	}
	if !regexpFound(e.log.String(), "reason=shutdown", fmt.Sprintf("still_mapped_by=%d", holder.Process.Pid)) {
		t.Error("the shutdown's vram.deallocated does not name the consumer still holding the CUDA shard")
	}
}

// TestAttachCUDAEndToEnd: an engine (the test process, on its own copy of
// the fake driver) attaches a VMM allocation to the built agent, which
// reads it in a reader process of its own (the agent's binary): verify
// passes, a byte the engine changes fails it, and the attachment ends with
// the engine's connection.
func TestAttachCUDAEndToEnd(t *testing.T) {
	gcc := testenv.Program(t, "gcc")
	e := newEnv(t)
	fake := func(name string) string {
		lib := filepath.Join(e.dir, name, "libcuda.so.1")
		if err := os.MkdirAll(filepath.Dir(lib), 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command(gcc, "-shared", "-fPIC", "-O2", "-o", lib, filepath.Join("..", "..", "sealer", "cuda", "testdata", "fakecuda.c"), "-lpthread").CombinedOutput(); err != nil {
			t.Fatalf("building the fake driver: %v\n%s", err, out)
		}
		return lib
	}
	lib := fake("agentlib")
	hsock := filepath.Join(e.dir, "run", "handoff.sock")
	e.writeConfigWith("cuda", fmt.Sprintf("cuda: {library: %s}\npolicy: {min_memory_bytes: 1024}\nhandoff: {socket: %s, shutdown_wait: 1s}\n", lib, hsock))
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })

	ctx := context.Background()
	devs, err := cuda.Open(ctx, cuda.Options{LibraryPath: fake("enginelib"), Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	engine := devs[0]
	defer engine.Close()
	data := bytes.Repeat([]byte("engine-owned weights "), 10000)
	mem, err := engine.Alloc(ctx, uint64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer engine.Free(ctx, mem)
	if err := engine.Write(ctx, mem, 0, data); err != nil {
		t.Fatal(err)
	}
	x, err := engine.Export(ctx, mem)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.DialConsumer(ctx, hsock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sum := sha256.Sum256(data)
	_, err = c.Attach(ctx, "engine-own", x.File, client.AttachOptions{GPUUUID: engine.StaticProperties().UUID, Size: uint64(len(data)), SHA256: hex.EncodeToString(sum[:])})
	x.File.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.mustCLI(0, "verify", "engine-own")
	if n := e.children(); n != 1 {
		t.Errorf("the agent runs %d child processes while one attachment is held, want its reader", n)
	}
	if err := engine.Write(ctx, mem, 777, []byte{^data[777]}); err != nil {
		t.Fatal(err)
	}
	if code, out, errOut := e.cli("verify", "engine-own"); code != exitFailed || !strings.Contains(out+errOut, "digest_mismatch") {
		t.Errorf("verify after the owner's change: exit %d: %s%s", code, out, errOut)
	}
	c.Close()
	e.waitFor("the attachment to end with its owner's connection", func() bool { _, ok := e.list()["engine-own"]; return !ok })
	e.waitFor("the reader process to exit", func() bool { return e.children() == 0 })
}

// children counts the agent's child processes (/proc/PID/task/*/children).
func (e *env) children() int {
	e.t.Helper()
	files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", e.cmd.Process.Pid))
	if len(files) == 0 {
		testenv.Missing(e.t, "no /proc/PID/task/TID/children on this kernel")
	}
	n := 0
	for _, f := range files {
		b, _ := os.ReadFile(f)
		n += len(strings.Fields(string(b)))
	}
	return n
}
