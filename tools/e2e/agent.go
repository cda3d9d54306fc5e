package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// DesignMetrics are the metric families the project promises (docs/metrics.md); the
// end-to-end test refuses an agent whose /metrics lacks one.
var DesignMetrics = []string{
	"vramseal_build_info", "vramseal_agent_info", "vramseal_gpu_info",
	"vramseal_gpu_memory_total_bytes", "vramseal_gpu_memory_used_bytes", "vramseal_gpu_memory_free_bytes",
	"vramseal_gpu_ecc_errors_total", "vramseal_sealed_shards", "vramseal_sealed_bytes",
	"vramseal_shard_info", "vramseal_shard_verified", "vramseal_shard_last_verified_timestamp_seconds",
	"vramseal_verify_interval_seconds", "vramseal_verification_overdue_shards",
	"vramseal_seals_total", "vramseal_verifications_total", "vramseal_verification_duration_seconds",
	"vramseal_verified_bytes_total", "vramseal_allocations_total", "vramseal_policy_compliant",
	"vramseal_audit_events_total", "vramseal_audit_emit_failures_total",
	"vramseal_audit_spool_pending_records", "vramseal_audit_spool_bytes",
	"vramseal_audit_spool_oldest_pending_timestamp_seconds", "vramseal_audit_spool_quarantined_files",
	"vramseal_audit_events_lost_total", "vramseal_audit_export_failures_total",
	"vramseal_collector_success", "vramseal_collector_duration_seconds",
	"vramseal_gpu_up", // beyond the table: docs/metrics.md
}

// Shard is a model file the agent seals at start-up.
type Shard struct {
	ID   string
	GPU  int
	Size int
}

// AgentConfig is what a test agent runs with.
type AgentConfig struct {
	Binary       string
	GPUs         int
	MemoryBytes  int64
	Shards       []Shard
	VerifyEvery  time.Duration
	MinFreeBytes int64  // audit.min_free_bytes; 0 leaves the default
	OTLPEndpoint string // OTEL_EXPORTER_OTLP_ENDPOINT; empty: a closed loopback port
	ExtraConfig  string // appended to the config file verbatim
}

// Agent is a running vramseal-agent on simulated GPUs.
type Agent struct {
	Addr   string // host:port of /metrics
	Socket string // control socket
	bin    string
	proc   process
}

// StartAgent writes the model files, the seal secret (0600, 32 bytes) and a
// config with device: sim, starts `vramseal-agent run` on a free loopback
// port with its control socket in a temporary directory, and waits until it
// is ready (every declared shard sealed).
func StartAgent(ctx context.Context, t testing.TB, cfg AgentConfig) *Agent {
	t.Helper()
	dir := t.TempDir()
	models := filepath.Join(dir, "models")
	if err := os.Mkdir(models, 0o755); err != nil {
		t.Fatal(err)
	}
	var shards strings.Builder
	for _, s := range cfg.Shards {
		data := make([]byte, s.Size)
		if _, err := rand.Read(data); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(models, s.ID+".safetensors")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&shards, "  - {id: %s, path: %q, gpu: %d}\n", s.ID, path, s.GPU)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	secretPath := filepath.Join(dir, "seal.key")
	if err := os.WriteFile(secretPath, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	audit := fmt.Sprintf("audit: {spool_dir: %q}\n", filepath.Join(dir, "spool"))
	if cfg.MinFreeBytes > 0 {
		audit = fmt.Sprintf("audit: {spool_dir: %q, min_free_bytes: %d}\n", filepath.Join(dir, "spool"), cfg.MinFreeBytes)
	}
	conf := fmt.Sprintf(`worker_id: e2e-node
device: sim
sim: {gpus: %d, memory_bytes: %d}
seal_secret_file: %q
model_dirs: [%q]
verify: {interval: %s}
%sshards:
%s%s`, cfg.GPUs, cfg.MemoryBytes, secretPath, models, cfg.VerifyEvery, audit, shards.String(), cfg.ExtraConfig)
	confPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	sockDir := filepath.Join(dir, "run")
	if err := os.Mkdir(sockDir, 0o700); err != nil {
		t.Fatal(err)
	}
	a := &Agent{Addr: freeLoopbackAddr(t), Socket: filepath.Join(sockDir, "agent.sock"), bin: cfg.Binary,
		proc: process{name: "agent", logPath: filepath.Join(dir, "agent.log"), logTail: 6000, logTitle: "vramseal-agent"}}
	otlp := cfg.OTLPEndpoint
	if otlp == "" {
		otlp = "http://" + freeLoopbackAddr(t) // nothing listens: exports fail, records wait in the spool
	}
	cmd := exec.Command(cfg.Binary, "run",
		"--config.file="+confPath,
		"--web.listen-address="+a.Addr,
		"--control.socket="+a.Socket,
		"--log.level=debug")
	cmd.Env = append(os.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT="+otlp, "OTEL_SERVICE_NAME=vramseal-agent-e2e")
	a.proc.start(t, cmd, stopPolicy{grace: 30 * time.Second, strict: true})
	a.proc.waitReady(ctx, t, &http.Client{Timeout: 2 * time.Second}, "http://"+a.Addr+"/readyz")
	return a
}

// Log returns the end of the agent's log, for failure messages.
func (a *Agent) Log() string { return a.proc.Log() }

// CLI runs a client subcommand against this agent (adds --control.socket).
func (a *Agent) CLI(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bin, append(args, "--control.socket="+a.Socket)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("vramseal-agent %s: %w: %s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// MissingMetrics scrapes the agent's /metrics once and returns the names of
// want that it does not expose (as # TYPE lines).
func (a *Agent) MissingMetrics(ctx context.Context, want []string) ([]string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape agent: %w", err)
	}
	defer resp.Body.Close()
	return missingFamilies(resp.Body, want)
}

func missingFamilies(r io.Reader, want []string) ([]string, error) {
	have := map[string]bool{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "#" && f[1] == "TYPE" {
			have[f[2]] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /metrics: %w", err)
	}
	var missing []string
	for _, w := range want {
		if !have[w] {
			missing = append(missing, w)
		}
	}
	sort.Strings(missing)
	return missing, nil
}
