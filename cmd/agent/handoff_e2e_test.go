package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/client"
)

// TestHoldLeaseChild is the consumer process of TestHandOffEndToEnd: it
// opens the shard named in the environment, prints its pid, and holds the
// lease until it is killed or its lease is revoked (then it prints so).
// With VRAMSEAL_TEST_HOLD_CUDA_LIB it imports a CUDA shard with that
// driver and holds the mapping too.
func TestHoldLeaseChild(t *testing.T) {
	sock, id := os.Getenv("VRAMSEAL_TEST_HOLD_SOCKET"), os.Getenv("VRAMSEAL_TEST_HOLD_SHARD")
	if sock == "" {
		return // only as the child of TestHandOffEndToEnd
	}
	ctx := context.Background()
	c, err := client.DialConsumer(ctx, sock)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	l, err := c.Open(ctx, id)
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(3)
	}
	if lib := os.Getenv("VRAMSEAL_TEST_HOLD_CUDA_LIB"); lib != "" {
		drv, err := client.OpenCUDA(lib)
		if err == nil {
			_, err = drv.Import(ctx, l)
		}
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(3)
		}
	}
	fmt.Println("HOLDING", os.Getpid())
	// A revoked lease closes the connection: the next call fails.
	for {
		time.Sleep(100 * time.Millisecond)
		if _, err := c.VerifySealRecord(ctx, []byte(`{}`)); err != nil && strings.Contains(err.Error(), "unreachable") {
			fmt.Println("REVOKED")
			os.Exit(0)
		}
	}
}

func (e *env) holdLease(socket, id string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	e.t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHoldLeaseChild$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), "VRAMSEAL_TEST_HOLD_SOCKET="+socket, "VRAMSEAL_TEST_HOLD_SHARD="+id), env...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "HOLDING") {
			return cmd, sc
		}
		if strings.HasPrefix(sc.Text(), "ERR") {
			e.t.Fatalf("consumer: %s", sc.Text())
		}
	}
	e.t.Fatal("the consumer ended before it held the lease")
	return nil, nil
}

// TestHandOffEndToEnd drives the consumer socket of the built agent: open
// as a consumer, a lease that holds off release until the consumer dies,
// --force, a corrupted shard refused by open, and SIGTERM with a lease.
func TestHandOffEndToEnd(t *testing.T) {
	e := newEnv(t)
	aPath := e.shardFile("a.bin", 3<<20+7, 1)
	e.shardFile("b.bin", 1<<20, 2)
	hsock := filepath.Join(e.dir, "run", "handoff.sock")
	e.writeConfigWith("sim", fmt.Sprintf("sim: {gpus: 2, memory_bytes: 4294967296}\nhandoff: {socket: %s, shutdown_wait: 2s}\n", hsock),
		"a:a.bin:0", "b:b.bin:1")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	if st, err := os.Stat(hsock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("consumer socket: %v, mode %v", err, st.Mode())
	}

	data, _ := os.ReadFile(aPath)
	sum := sha256.Sum256(data)
	out := e.mustCLI(0, "open", "a", "--handoff.socket", hsock)
	if strings.TrimSpace(out) != "content_sha256 "+hex.EncodeToString(sum[:]) {
		t.Errorf("open a: %q, want the file's sha256", out)
	}
	if code, _, errOut := e.cli("open", "nope", "--handoff.socket", hsock); code != exitUsage || !strings.Contains(errOut, "no such shard") {
		t.Errorf("open of an unknown shard: exit %d: %s", code, errOut)
	}
	if code, _, _ := e.cli("open", "a", "--handoff.socket", filepath.Join(e.dir, "none.sock")); code != exitUnreachable {
		t.Errorf("open without a consumer socket: exit %d, want %d", code, exitUnreachable)
	}
	// The control socket is not the consumer socket.
	if code, _, _ := e.cli("open", "a", "--handoff.socket", e.socket); code == exitOK {
		t.Error("open succeeded on the control socket")
	}

	// A lease holds off release until its holder dies.
	holder, _ := e.holdLease(hsock, "a")
	pid := fmt.Sprint(holder.Process.Pid)
	code, _, errOut := e.cli("release", "a")
	if code != exitFailed || !strings.Contains(errOut, "pid "+pid) {
		t.Fatalf("release of a leased shard: exit %d: %s", code, errOut)
	}
	if n := len(e.list()["a"].Leases); n != 1 {
		t.Errorf("list shows %d leases on a, want 1", n)
	}
	if _, body := e.get("/metrics"); !strings.Contains(body, `vramseal_shard_leases{gpu="0",shard_id="a"} 1`) {
		t.Error("/metrics does not show the lease")
	}
	_ = holder.Process.Kill()
	_ = holder.Wait()
	e.waitFor("the dead consumer's lease to end", func() bool { return len(e.list()["a"].Leases) == 0 })

	// --force revokes a lease and names who may still map the memory.
	holder, lines := e.holdLease(hsock, "a")
	out = e.mustCLI(0, "release", "a", "--force")
	if !strings.Contains(out, fmt.Sprintf("may still map the memory: pid %d", holder.Process.Pid)) {
		t.Errorf("release --force: %s", out)
	}
	revoked := make(chan bool, 1)
	go func() {
		for lines.Scan() {
			if lines.Text() == "REVOKED" {
				revoked <- true
				return
			}
		}
		revoked <- false
	}()
	select {
	case ok := <-revoked:
		if !ok {
			t.Error("the consumer was not told its lease ended")
		}
	case <-time.After(10 * time.Second):
		t.Error("the revoked consumer's connection stayed open")
	}
	if !regexpFound(e.log.String(), "event=vramseal.vram.deallocated", "reason=forced") {
		t.Error("no vram.deallocated with reason=forced")
	}

	// A shard altered in memory is refused by open (verify-before-use).
	e.mustCLI(0, "debug", "corrupt", "b", "--offset", "12345")
	if code, _, errOut := e.cli("open", "b", "--handoff.socket", hsock); code != exitFailed {
		t.Errorf("open of a corrupted shard: exit %d: %s", code, errOut)
	}
	e.mustCLI(0, "release", "b")

	// SIGTERM with a lease open: the agent waits handoff.shutdown_wait,
	// then releases the shard anyway and exits 0.
	cPath := e.shardFile("c.bin", 1<<20, 3)
	e.mustCLI(0, "seal", cPath, "--id", "c", "--gpu", "0")
	holder, _ = e.holdLease(hsock, "c")
	start := time.Now()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM with a lease open", code)
	}
	if time.Since(start) < 2*time.Second {
		t.Errorf("the agent did not wait for the lease (stopped after %s)", time.Since(start))
	}
	if !regexpFound(e.log.String(), "reason=shutdown", fmt.Sprintf("still_mapped_by=%d", holder.Process.Pid)) {
		t.Error("the shutdown's vram.deallocated does not name the consumer still holding it")
	}
	if _, err := os.Stat(hsock); !os.IsNotExist(err) {
		t.Errorf("consumer socket left behind: %v", err)
	}
}
