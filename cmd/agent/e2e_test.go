package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/collector/metricstest"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// buildAgent builds the binary once per test run into a temporary folder.
var (
	buildOnce sync.Once
	buildBin  string
	buildErr  error
	buildDir  string
)

func agentBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vramseal-e2e-")
		if buildErr != nil {
			return
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			goBin = "go"
		}
		buildBin = filepath.Join(buildDir, "vramseal-agent")
		out, err := exec.Command(goBin, "build", "-o", buildBin, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

func TestMain(m *testing.M) {
	if os.Getenv(floodEnvSocket) != "" { // the load test's flooding helper
		os.Exit(runFlood())
	}
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	if crashBin != "" { // crash_test.go's build
		os.RemoveAll(filepath.Dir(crashBin))
	}
	os.Exit(code)
}

// syncBuffer collects the agent's log.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// env is one agent under test: its files, its process and its log.
type env struct {
	t      *testing.T
	bin    string
	dir    string
	models string
	socket string
	config string
	addr   string
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan error
	// extraEnv is added to the environment of CLI commands.
	extraEnv []string
	// verify is the configuration's verify block (writeConfigWith);
	// empty: every second, with 10% jitter.
	verify string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	e := &env{t: t, bin: agentBinary(t), dir: dir, models: filepath.Join(dir, "models"),
		socket: filepath.Join(dir, "run", "agent.sock"), config: filepath.Join(dir, "agent.yml"), log: &syncBuffer{}}
	if err := os.Mkdir(e.models, 0o755); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte("0123456789abcdef"), 3)
	if err := os.WriteFile(filepath.Join(dir, "seal.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.addr = ln.Addr().String()
	ln.Close()
	return e
}

// shardFile writes a models/ file of n pseudo-random bytes.
func (e *env) shardFile(name string, n int, seed byte) string {
	p := filepath.Join(e.models, name)
	data := make([]byte, n)
	x := uint32(seed) + 1
	for i := range data {
		x = x*1664525 + 1013904223
		data[i] = byte(x >> 24)
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// writeConfig writes the agent's configuration with the given shards
// ("id:file:gpu").
func (e *env) writeConfig(device string, shards ...string) {
	e.writeConfigWith(device, "sim: {gpus: 2, memory_bytes: 4294967296}\n", shards...)
}

// writeConfigWith is writeConfig with more YAML (a sim block at least).
// A shard may name its model reference after the GPU ("id:file:gpu:ref").
func (e *env) writeConfigWith(device, extra string, shards ...string) {
	var b strings.Builder
	fmt.Fprintf(&b, "worker_id: e2e-node\ndevice: %s\n%s", device, extra)
	fmt.Fprintf(&b, "seal_secret_file: %s\nmodel_dirs: [%s]\n", filepath.Join(e.dir, "seal.key"), e.models)
	fmt.Fprintf(&b, "audit: {spool_dir: %s}\n", filepath.Join(e.dir, "spool"))
	verify := e.verify
	if verify == "" {
		verify = "{interval: 1s, jitter: 0.1}"
	}
	fmt.Fprintf(&b, "verify: %s\nshards:\n", verify)
	for _, s := range shards {
		parts := strings.Split(s, ":")
		ref := ""
		if len(parts) > 3 {
			ref = fmt.Sprintf(", model_ref: %q", parts[3])
		}
		fmt.Fprintf(&b, "  - {id: %s, path: models/%s, gpu: %s%s}\n", parts[0], parts[1], parts[2], ref)
	}
	if err := os.WriteFile(e.config, []byte(b.String()), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// start runs the agent; overrides replace flags by name ("--config.file", "x").
func (e *env) start(overrides ...string) {
	e.t.Helper()
	flags := map[string]string{"--config.file": e.config, "--control.socket": e.socket, "--web.listen-address": e.addr, "--log.level": "debug"}
	for i := 0; i+1 < len(overrides); i += 2 {
		flags[overrides[i]] = overrides[i+1]
	}
	args := []string{"run"}
	for k, v := range flags {
		args = append(args, k, v)
	}
	e.cmd = exec.Command(e.bin, args...)
	e.cmd.Stdout, e.cmd.Stderr = e.log, e.log
	if err := e.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.exited = make(chan error, 1)
	go func() { e.exited <- e.cmd.Wait() }()
	e.t.Cleanup(func() {
		if e.cmd.ProcessState == nil {
			_ = e.cmd.Process.Kill()
			<-e.exited
		}
		if e.t.Failed() {
			e.t.Logf("agent log:\n%s", e.log.String())
		}
	})
}

// cli runs a client subcommand and returns its exit status and output.
func (e *env) cli(args ...string) (int, string, string) {
	e.t.Helper()
	if args[0] != "digest" && args[0] != "audit" && args[0] != "open" { // offline commands, and the consumer socket's
		args = append(args, "--control.socket", e.socket)
	}
	cmd := exec.Command(e.bin, args...)
	cmd.Env = append(os.Environ(), e.extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

func (e *env) mustCLI(want int, args ...string) string {
	e.t.Helper()
	code, out, errOut := e.cli(args...)
	if code != want {
		e.t.Fatalf("vramseal-agent %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, want, out, errOut)
	}
	return out + errOut
}

func (e *env) get(path string) (int, string) {
	resp, err := http.Get("http://" + e.addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric reads one unlabelled sample from /metrics (NaN when absent).
func (e *env) metric(name string) float64 {
	e.t.Helper()
	tr := &http.Transport{DisableKeepAlives: true, DialContext: (&net.Dialer{}).DialContext}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("http://" + e.addr + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	e.t.Fatalf("no %s on /metrics", name)
	return 0
}

func (e *env) waitFor(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) list() map[string]client.Shard {
	e.t.Helper()
	out := e.mustCLI(0, "list", "-o", "json")
	var resp client.ListResponse
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		e.t.Fatalf("list -o json: %v\n%s", err, out)
	}
	m := map[string]client.Shard{}
	for _, s := range resp.Shards {
		m[s.Seal.ShardID] = s
	}
	return m
}

func (e *env) wait(timeout time.Duration) int {
	e.t.Helper()
	select {
	case <-e.exited:
		return e.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		e.t.Fatalf("agent still running %s after the signal", timeout)
	}
	return -1
}

// TestEndToEnd drives the built binary as a user would.
func TestEndToEnd(t *testing.T) {
	e := newEnv(t)
	e.shardFile("a.bin", 3<<20+5, 1)
	e.shardFile("b.bin", 2<<20, 2)
	cPath := e.shardFile("c.bin", 5<<20+123, 3)
	e.shardFile("d.bin", 1<<20, 4)
	e.writeConfig("sim", "a:a.bin:0", "b:b.bin:1")
	e.start()

	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	if code, body := e.get("/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("/healthz: %d %s", code, body)
	}
	if code, body := e.get("/"); code != 200 || !strings.Contains(body, "SIMULATED") {
		t.Errorf("landing page: %d, simulated label missing", code)
	}
	if code, body := e.get("/metrics"); code != 200 || !strings.Contains(body, "go_goroutines") {
		t.Errorf("/metrics: %d", code)
	}

	// list: the two declared shards, on their GPUs.
	out := e.mustCLI(0, "list")
	for _, want := range []string{"a      0", "b      1", "sha256-tree-v1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("list output lacks %q:\n%s", want, out)
		}
	}
	before := e.list()
	if len(before) != 2 || before["a"].Seal.GPUDevice != 0 || before["b"].Seal.GPUDevice != 1 {
		t.Fatalf("list: %+v", before)
	}

	// seal another file; its record is signed and verifiable.
	// The caller's W3C trace context reaches the audit events.
	e.extraEnv = []string{"TRACEPARENT=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
	out = e.mustCLI(0, "seal", cPath, "--id", "c", "--gpu", "1", "--model-ref", "e2e@1", "-o", "json")
	e.extraEnv = nil
	if !regexpFound(e.log.String(), "event=vramseal.vram.sealed", "trace_id=4bf92f3577b34da6a3ce929d0e0e4736") {
		t.Error("the vram.sealed event of a seal made with TRACEPARENT does not carry the caller's trace id")
	}
	var sealC sealer.Seal
	if err := json.Unmarshal([]byte(out), &sealC); err != nil || sealC.ShardID != "c" || sealC.VRAMBytes != 5<<20+123 {
		t.Fatalf("seal -o json: %v\n%s", err, out)
	}
	digestOut := e.mustCLI(0, "digest", cPath, "-o", "json")
	if !strings.Contains(digestOut, sealC.Digest) || !strings.Contains(digestOut, sealC.ContentSHA256) {
		t.Errorf("offline digest differs from the seal's:\n%s", digestOut)
	}
	recordFile := filepath.Join(e.dir, "c.seal.json")
	if err := os.WriteFile(recordFile, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}

	out = e.mustCLI(0, "verify", "--all")
	for _, id := range []string{"a: ok", "b: ok", "c: ok"} {
		if !strings.Contains(out, id) {
			t.Errorf("verify --all lacks %q:\n%s", id, out)
		}
	}
	// /metrics: the vramseal series of what just happened, each documented.
	_, scrape := e.get("/metrics")
	for _, want := range []string{
		`vramseal_agent_info{device="sim",worker_id="e2e-node"} 1`,
		`vramseal_sealed_shards{gpu="1"} 2`,
		`vramseal_shard_verified{gpu="0",shard_id="a"} 1`,
		`vramseal_verifications_total{gpu="1",result="ok"}`,
		`vramseal_policy_compliant{gpu="0",policy="vram_only"} 1`,
		`vramseal_verification_overdue_shards{gpu="0"} 0`,
		`vramseal_audit_events_total{event="vram.sealed"} 3`,
	} {
		if !strings.Contains(scrape, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	doc, err := os.Open("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	defer doc.Close()
	if err := metricstest.CheckDocumented(strings.NewReader(scrape), doc, "vramseal_"); err != nil {
		t.Errorf("/metrics against docs/metrics.md: %v", err)
	}
	e.mustCLI(0, "verify", "--seal", recordFile)

	// corrupt one bit of a; verifying it fails and names the offset.
	e.mustCLI(0, "debug", "corrupt", "a", "--offset", "300000")
	out = e.mustCLI(1, "verify", "a")
	if !strings.Contains(out, "digest_mismatch") || !strings.Contains(out, "offset 262144") {
		t.Errorf("verify of the corrupted shard:\n%s", out)
	}
	// The CRITICAL record was durable in the spool before the answer came.
	m := regexp.MustCompile(`audit event (\S+) \(durable: true\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("verify did not report a durable CRITICAL record:\n%s", out)
	}
	criticalID := m[1]
	e.mustCLI(1, "verify", "--all")
	e.mustCLI(2, "verify", "nope")
	e.waitFor("the corrupted shard in the failed state", func() bool { return e.list()["a"].State == sealer.StateFailed })

	// release c.
	out = e.mustCLI(0, "release", "c")
	if !strings.Contains(out, fmt.Sprintf("freed %d bytes on GPU 1", 5<<20+123)) {
		t.Errorf("release output: %s", out)
	}
	e.mustCLI(2, "release", "c")

	// SIGHUP with a changed configuration: b removed, d added, e declared
	// but missing (the agent is then not ready), a unchanged.
	e.writeConfig("sim", "a:a.bin:0", "d:d.bin:1", "e:e.bin:0")
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("d sealed and b released", func() bool {
		l := e.list()
		_, hasB := l["b"]
		_, hasD := l["d"]
		return hasD && !hasB
	})
	e.waitFor("/readyz 503 naming e", func() bool {
		code, body := e.get("/readyz")
		return code == 503 && strings.HasSuffix(body, "declared shards not sealed yet: e\n")
	})
	after := e.list()
	if after["a"].Seal != before["a"].Seal {
		t.Error("the reload touched the unchanged shard a")
	}
	if !strings.Contains(e.log.String(), "declared shard could not be sealed; will retry") {
		t.Error("the missing declared shard was not reported")
	}
	e.shardFile("e.bin", 4096, 5)
	e.waitFor("e sealed after a retry", func() bool { code, _ := e.get("/readyz"); return code == 200 })

	// A reload with a broken configuration changes nothing.
	if err := os.WriteFile(e.config, []byte("device: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := e.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	e.waitFor("the refused reload logged", func() bool { return strings.Contains(e.log.String(), "reload refused") })
	if len(e.list()) != 3 {
		t.Error("a refused reload changed the shards")
	}

	// SIGTERM: exit 0, every shard released with its event.
	held := e.list()
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d after SIGTERM, want 0", code)
	}
	logText := e.log.String()
	for id := range held {
		if !strings.Contains(logText, "event=vramseal.vram.deallocated") || !regexpFound(logText, "vramseal.vram.deallocated", "shard_id="+id+" ") {
			t.Errorf("no vram.deallocated event for %s at shutdown", id)
		}
	}
	if !strings.Contains(logText, fmt.Sprintf("every shard released\" released=%d", len(held))) {
		t.Errorf("shutdown did not report releasing %d shards", len(held))
	}
	if _, err := os.Stat(e.socket); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	e.mustCLI(4, "list")

	// The spool holds the CRITICAL record and its chain verifies offline.
	spoolDir := filepath.Join(e.dir, "spool")
	segs, _ := filepath.Glob(filepath.Join(spoolDir, "*"))
	found := false
	for _, f := range segs {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(criticalID)) {
			found = true
		}
	}
	if !found {
		t.Errorf("the durable CRITICAL record %s is not in the spool %s", criticalID, spoolDir)
	}
	out = e.mustCLI(0, "audit", "verify", "--spool.dir", spoolDir, "--seal.secret-file", filepath.Join(e.dir, "seal.key"))
	if !strings.Contains(out, "intact") {
		t.Errorf("audit verify:\n%s", out)
	}
}

// regexpFound reports whether one log line holds both a and b.
func regexpFound(log, a, b string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, a) && strings.Contains(line, b) {
			return true
		}
	}
	return false
}

// TestRunRefusesBadStarts: each start-up failure exits 2 with a message.
func TestRunRefusesBadStarts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(e *env) []string
		want  string
	}{
		{"device cuda without a driver", func(e *env) []string { e.writeConfig("cuda"); return nil }, "no usable NVIDIA CUDA driver"},
		{"device auto without a driver", func(e *env) []string { e.writeConfig("auto"); return nil }, "no usable NVIDIA CUDA driver"},
		{"unknown key", func(e *env) []string {
			os.WriteFile(e.config, []byte("device: sim\nseal_secret_file: /k\nverify: {intervall: 5m}\n"), 0o644)
			return nil
		}, "verify.intervall (line 3): unknown key"},
		{"missing configuration file", func(e *env) []string { return []string{"--config.file", filepath.Join(e.dir, "none.yml")} }, "none.yml: cannot read the configuration file"},
		{"secret readable by others", func(e *env) []string {
			e.writeConfig("sim")
			os.Chmod(filepath.Join(e.dir, "seal.key"), 0o644)
			return nil
		}, "mode 0644 lets group or others read or write it"},
		{"socket path not writable", func(e *env) []string {
			e.writeConfig("sim")
			os.WriteFile(filepath.Join(e.dir, "file"), nil, 0o644)
			return []string{"--control.socket", filepath.Join(e.dir, "file", "agent.sock")}
		}, "cannot create its directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if strings.Contains(tc.want, "CUDA") {
				if ds, err := cuda.Open(context.Background(), cuda.Options{}); err == nil {
					for _, d := range ds {
						d.Close()
					}
					t.Skip("a CUDA driver and GPU are present on this machine: the no-driver exit cannot be shown") // a GPU-only skip
				}
			}
			e := newEnv(t)
			e.start(tc.setup(e)...)
			if code := e.wait(30 * time.Second); code != exitUsage {
				t.Fatalf("exit status %d, want 2\n%s", code, e.log.String())
			}
			if !strings.Contains(e.log.String(), tc.want) {
				t.Errorf("log lacks %q:\n%s", tc.want, e.log.String())
			}
		})
	}
}

// TestPolicyBlocksAGPU: a GPU that breaks the VRAM-only policy gets no
// shards, the agent keeps running and is not ready; with exit_on_violation
// it stops with exit status 3.
func TestPolicyBlocksAGPU(t *testing.T) {
	const sim = "sim: {gpus: 2, memory_bytes: 4294967296, per_gpu: [{gpu: 1, integrated: true}]}\n"
	e := newEnv(t)
	p := e.shardFile("x.bin", 10000, 1)
	e.shardFile("a.bin", 10000, 2)
	e.writeConfigWith("sim", sim, "a:a.bin:0")
	e.start()
	// At start-up the policy checks the GPUs the declared shards use (0);
	// GPU 1 is checked before its first seal.
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	out := e.mustCLI(1, "seal", p, "--id", "x", "--gpu", "1")
	if !strings.Contains(out, "integrated") {
		t.Errorf("seal on the blocked GPU: %s", out)
	}
	if code, body := e.get("/readyz"); code != 503 || !strings.Contains(body, "vram_only") {
		t.Errorf("/readyz with a blocked GPU: %d %s", code, body)
	}
	logText := e.log.String()
	if !regexpFound(logText, "event=vramseal.policy.violation", "violation=integrated_gpu") ||
		!regexpFound(logText, "event=vramseal.vram.allocation_failed", "reason=policy_blocked") {
		t.Error("policy.violation or allocation_failed(policy_blocked) not emitted")
	}
	if err := e.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := e.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit status %d", code)
	}

	e = newEnv(t)
	e.writeConfigWith("sim", sim+"policy: {exit_on_violation: true}\n")
	e.start()
	if code := e.wait(30 * time.Second); code != exitPolicy {
		t.Fatalf("exit status %d with exit_on_violation, want 3\n%s", code, e.log.String())
	}
	if !strings.Contains(e.log.String(), "action_taken=agent_stopped") {
		t.Errorf("no agent_stopped violation logged:\n%s", e.log.String())
	}
}

// TestAgentMetricsPassPromtool checks the running agent's /metrics with
// promtool (built by `make test`).
func TestAgentMetricsPassPromtool(t *testing.T) {
	promtool := testenv.Tool(t, "VRAMSEAL_PROMTOOL")
	e := newEnv(t)
	e.shardFile("a.bin", 100000, 1)
	e.writeConfig("sim", "a:a.bin:0")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	e.mustCLI(0, "verify", "--all")
	_, scrape := e.get("/metrics")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(scrape)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

func TestRunExits1WhenTheWebPortIsTaken(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	e.writeConfig("sim", "a:a.bin:0")
	e.shardFile("a.bin", 5000, 1)
	e.start("--web.listen-address", ln.Addr().String())
	if code := e.wait(30 * time.Second); code != exitFailed {
		t.Fatalf("exit status %d, want 1\n%s", code, e.log.String())
	}
	logText := e.log.String()
	if !strings.Contains(logText, "address already in use") || !strings.Contains(logText, "every shard released") {
		t.Errorf("log:\n%s", logText)
	}
}

func TestClientUnreachableExit4(t *testing.T) {
	e := newEnv(t)
	code, _, errOut := e.cli("list")
	if code != exitUnreachable || !strings.Contains(errOut, "agent unreachable") {
		t.Fatalf("exit %d: %s", code, errOut)
	}
}

// TestDemoScript runs `make run`'s script against the built binary: it must
// finish unattended, within a minute, with exit status 0.
func TestDemoScript(t *testing.T) {
	bash := testenv.Program(t, "bash")
	bin := agentBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "../../scripts/demo.sh")
	cmd.Env = append(os.Environ(), "BIN="+bin, "TMPDIR="+t.TempDir(), "DEMO_EXIT=1", "DEMO_ADDR=127.0.0.1:0")
	start := time.Now()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v after %s\n%s", err, time.Since(start), out)
	}
	for _, want := range []string{
		"event=vramseal.vram.sealed", "event=vramseal.seal.verified", "reason=digest_mismatch",
		"reason=content_digest_mismatch", "event=vramseal.vram.deallocated", "is outside", "agent exited with status 0",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	t.Logf("demo ran in %s", time.Since(start).Round(time.Millisecond))
}
