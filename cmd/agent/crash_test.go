package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
)

// The crash points of internal/crashpoint, in the order an operation
// reaches them.
var crashPoints = []string{
	"seal.before_allocate", "seal.after_copy", "seal.before_sealed_event", "seal.after_sealed_event",
	"release.before_free", "release.after_deallocated_event",
	"lease.after_export", "lease.after_opened_event",
	"spool.rotate.before_close", "spool.rotate.after_close",
}

var (
	crashOnce sync.Once
	crashBin  string
	crashErr  error
)

// crashAgentBinary builds the agent with the crashpoints tag, once.
func crashAgentBinary(t *testing.T) string {
	t.Helper()
	crashOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vramseal-crash-")
		if err != nil {
			crashErr = err
			return
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		crashBin = filepath.Join(dir, "vramseal-agent-crashpoints")
		if out, err := exec.Command(goBin, "build", "-tags", "crashpoints", "-o", crashBin, ".").CombinedOutput(); err != nil {
			crashErr = fmt.Errorf("go build -tags crashpoints: %v\n%s", err, out)
		}
	})
	if crashErr != nil {
		t.Fatal(crashErr)
	}
	return crashBin
}

// TestReleaseBuildHasNoCrashPoints: the binary users run holds none of the
// crash points, their names or their environment variables; the crash
// tests' build holds them all.
func TestReleaseBuildHasNoCrashPoints(t *testing.T) {
	bin := os.Getenv("VRAMSEAL_AGENT_BIN")
	if bin == "" {
		bin = agentBinary(t)
	}
	check := func(path string, want bool) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		words := append([]string{"VRAMSEAL_CRASHPOINT", "internal/crashpoint"}, crashPoints...)
		for _, w := range words {
			if got := bytes.Contains(data, []byte(w)); got != want {
				t.Errorf("%s: holds %q: %v, want %v", filepath.Base(path), w, got, want)
			}
		}
	}
	check(bin, false)
	check(crashAgentBinary(t), true)
}

// crashEnv is an agent of the crashpoints build with a consumer socket,
// 1 MiB spool segments, a declared shard and its point set.
type crashEnv struct {
	*env
	hsock, fifo string
}

func newCrashEnv(t *testing.T) *crashEnv {
	e := &crashEnv{env: newEnv(t)}
	e.bin = crashAgentBinary(t)
	e.hsock = filepath.Join(e.dir, "run", "handoff.sock")
	e.fifo = filepath.Join(e.dir, "crash.fifo")
	if err := syscall.Mkfifo(e.fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	e.shardFile("d.bin", 256<<10, 1)
	e.shardFile("ok.bin", 512<<10, 2)
	e.shardFile("victim.bin", 512<<10, 3)
	cfg := fmt.Sprintf(`worker_id: crash-node
device: sim
sim: {gpus: 2, memory_bytes: 1073741824}
seal_secret_file: %s
model_dirs: [%s]
audit: {spool_dir: %s, segment_bytes: 1048576}
handoff: {socket: %s, shutdown_wait: 1s}
verify: {interval: 1s, jitter: 0.1}
shards:
  - {id: d, path: models/d.bin, gpu: 0}
`, filepath.Join(e.dir, "seal.key"), e.models, filepath.Join(e.dir, "spool"), e.hsock)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	// The CLI's processes pass every point.
	e.extraEnv = []string{"VRAMSEAL_CRASHPOINT="}
	return e
}

// hitWaiter reads the FIFO: it receives the point's name once the agent
// stops there.
func (e *crashEnv) hitWaiter() <-chan string {
	ch := make(chan string, 1)
	go func() {
		f, err := os.OpenFile(e.fifo, os.O_RDONLY, 0) // blocks until the agent writes
		if err != nil {
			ch <- ""
			return
		}
		defer f.Close()
		line, _ := bufio.NewReader(f).ReadString('\n')
		ch <- strings.TrimSpace(line)
	}()
	return ch
}

// gpuMetric reads a metric's samples by their gpu label.
func (e *env) gpuMetric(name string) map[string]string {
	_, body := e.get("/metrics")
	out := map[string]string{}
	for _, line := range strings.Split(body, "\n") {
		rest, ok := strings.CutPrefix(line, name+"{")
		if !ok {
			continue
		}
		labels, v, _ := strings.Cut(rest, "} ")
		for _, l := range strings.Split(labels, ",") {
			if g, ok := strings.CutPrefix(l, `gpu="`); ok {
				out[strings.TrimSuffix(g, `"`)] = v
			}
		}
	}
	return out
}

// TestCrashAtEveryStep SIGKILLs the agent at each named point of a seal, a
// release, a lease hand-off and a spool rotation. Operations that returned
// success before have their events in the spool, the spool verifies, and
// after a restart no shard is half-sealed, the device's accounting matches
// the sealed bytes, and the interrupted operation can be done again.
func TestCrashAtEveryStep(t *testing.T) {
	for _, point := range crashPoints {
		t.Run(point, func(t *testing.T) { crashAt(t, point) })
	}
}

func crashAt(t *testing.T, point string) {
	e := newCrashEnv(t)
	ctx := context.Background()
	// Before the operation the agent is killed in, the declared shard and
	// two more are sealed (a seal point's 4th time is the victim's), one
	// shard opened and one released (their points' 2nd time is the
	// victim's); no rotation comes before the victim's.
	n := 2
	switch {
	case strings.HasPrefix(point, "seal."):
		n = 4
	case strings.HasPrefix(point, "spool."):
		n = 1
	}
	t.Setenv("VRAMSEAL_CRASHPOINT", fmt.Sprintf("%s@%d", point, n))
	t.Setenv("VRAMSEAL_CRASHPOINT_FIFO", e.fifo)
	t.Setenv("OTEL_LOGS_EXPORTER", "none")
	t.Setenv("OTEL_TRACES_EXPORTER", "none")
	hit := e.hitWaiter()
	e.start("--log.level", "info")
	c := client.NewControl(e.socket, 60*time.Second)
	defer c.CloseIdleConnections()
	e.waitFor("readiness", func() bool { st, err := c.Status(ctx); return err == nil && st.Ready })

	// Operations that return success before the crash.
	if _, err := c.Seal(ctx, client.SealRequest{ID: "ok", Path: filepath.Join(e.models, "ok.bin"), GPU: 1}); err != nil {
		t.Fatal(err)
	}
	e.mustCLI(0, "open", "ok", "--handoff.socket", e.hsock)
	e.waitFor("the lease to end", func() bool { sh, err := c.Shard(ctx, "ok"); return err == nil && len(sh.Leases) == 0 })
	if _, err := c.Seal(ctx, client.SealRequest{ID: "ok2", Path: filepath.Join(e.models, "ok.bin"), GPU: 0}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Release(ctx, "ok2", false); err != nil {
		t.Fatal(err)
	}

	// The operation the agent is killed in.
	done := make(chan error, 1)
	go func() {
		switch {
		case strings.HasPrefix(point, "seal."):
			_, err := c.Seal(ctx, client.SealRequest{ID: "victim", Path: filepath.Join(e.models, "victim.bin"), GPU: 0})
			done <- err
		case strings.HasPrefix(point, "release."):
			_, err := c.Release(ctx, "ok", false)
			done <- err
		case strings.HasPrefix(point, "lease."):
			code, _, errOut := e.cli("open", "ok", "--handoff.socket", e.hsock)
			done <- fmt.Errorf("open: exit %d: %s", code, errOut)
		default: // verifications fill the 1 MiB segment
			for {
				if _, err := c.VerifyAll(ctx); err != nil {
					done <- err
					return
				}
			}
		}
	}()
	select {
	case got := <-hit:
		if got != point {
			t.Fatalf("stopped at %q, want %q", got, point)
		}
	case err := <-done:
		t.Fatalf("the operation ended before the crash point: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("the crash point was never reached")
	}
	_ = e.cmd.Process.Signal(syscall.SIGKILL)
	<-e.exited
	if err := <-done; err == nil {
		t.Fatal("the interrupted operation returned success")
	}

	// Before restart: the spool verifies and every success has its event.
	spoolDir := filepath.Join(e.dir, "spool")
	verify := func(when string) {
		if code, out, errOut := e.cli("audit", "verify", "--spool.dir", spoolDir, "--seal.secret-file", filepath.Join(e.dir, "seal.key")); code != 0 {
			t.Fatalf("audit verify %s: exit %d\n%s%s", when, code, out, errOut)
		}
	}
	verify("after SIGKILL")
	recs := spoolRecords(t, spoolDir)
	has := func(name, shard string) bool {
		for _, r := range recs[name] {
			for _, f := range r.Fields {
				if f.Key == "shard_id" && f.Value == shard {
					return true
				}
			}
		}
		return false
	}
	for _, want := range [][2]string{{audit.NameVRAMSealed, "d"}, {audit.NameVRAMSealed, "ok"}, {audit.NameVRAMOpened, "ok"}, {audit.NameVRAMClosed, "ok"}} {
		if !has(want[0], want[1]) {
			t.Errorf("no %s of %s in the spool, though the operation returned success", want[0], want[1])
		}
	}
	if !has(audit.NameVRAMDeallocated, "ok2") {
		t.Error("no vram.deallocated of ok2 in the spool, though its release returned success")
	}
	// What the spool says of the interrupted operation's shard.
	victim := "victim"
	if !strings.HasPrefix(point, "seal.") {
		victim = "ok"
	}
	var trail []string
	for _, name := range []string{audit.NameVRAMAllocated, audit.NameVRAMSealed, audit.NameVRAMOpened, audit.NameVRAMClosed, audit.NameVRAMDeallocated} {
		if has(name, victim) {
			trail = append(trail, name)
		}
	}
	t.Logf("killed at %s: the spool holds %v for %s; the operation returned an error", point, trail, victim)

	// After restart: whole shards only, accounting consistent, the
	// interrupted operation possible again.
	os.Unsetenv("VRAMSEAL_CRASHPOINT")
	e.exited = nil
	e.start("--log.level", "info")
	e.waitFor("readiness after restart", func() bool { st, err := c.Status(ctx); return err == nil && st.Ready })
	list, err := c.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Seal.ShardID != "d" {
		t.Errorf("after restart: %d shards (%+v), want the declared one only", len(list), list)
	}
	if r, err := c.VerifyAll(ctx); err != nil || !r.Intact {
		t.Errorf("verify --all after restart: %+v %v", r, err)
	}
	// The device's telemetry is sampled: wait for a sample after the seal.
	consistent := func() bool {
		used, sealed := e.gpuMetric("vramseal_gpu_memory_used_bytes"), e.gpuMetric("vramseal_sealed_bytes")
		for g, u := range used {
			if s := sealed[g]; s != u && !(s == "" && u == "0") {
				return false
			}
		}
		return len(used) == 2
	}
	e.waitFor("the device's used bytes to equal the sealed bytes", consistent)
	if _, err := c.Seal(ctx, client.SealRequest{ID: "victim", Path: filepath.Join(e.models, "victim.bin"), GPU: 0}); err != nil {
		t.Errorf("sealing again after the crash: %v", err)
	}
	e.mustCLI(0, "release", "victim")
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	if code := e.wait(30 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM", code)
	}
	verify("after the restart")
}
