package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
	auditotel "github.com/vramseal/vramseal/audit/otel"
	"github.com/vramseal/vramseal/audit/spool"
	"github.com/vramseal/vramseal/internal/secret"
	"github.com/vramseal/vramseal/internal/testenv"
)

// startCollector runs the pinned OpenTelemetry Collector with an OTLP/HTTP
// receiver and the file exporter writing logs to the returned file; stop
// flushes and ends it.
func startCollector(t *testing.T) (endpoint, file string, stop func()) {
	t.Helper()
	bin := testenv.Tool(t, "VRAMSEAL_OTELCOL")
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	file = filepath.Join(dir, "logs.jsonl")
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  file: {path: %q, flush_interval: 100ms}
service:
  telemetry:
    metrics: {level: none}
  pipelines:
    logs: {receivers: [otlp], exporters: [file]}
`, port, file)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config=file:"+filepath.Join(dir, "config.yaml"))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("collector did not start: %s", out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", port), file, stop
}

// TestAuditVerifyCollectorFile ships a spool to a real collector and
// checks its file with audit verify --collector-file, alone and against
// the spool; an altered attribute in the file fails it.
func TestAuditVerifyCollectorFile(t *testing.T) {
	endpoint, file, stop := startCollector(t)
	secretFile := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(secretFile, bytes.Repeat([]byte("k"), 40), 0o600); err != nil {
		t.Fatal(err)
	}
	sec, err := secret.Load(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := sec.Key(secret.LabelAuditCheckpoint)
	dir := t.TempDir()
	log, _ := test.NewNullLogger()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint) // the exporter reads it itself
	env := map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
	p, err := auditotel.NewPipeline(context.Background(), auditotel.Config{
		Spool:    spool.Config{Dir: dir, CheckpointKey: key, SegmentBytes: 2048},
		WorkerID: "node-a", Logger: log, RetryMin: 50 * time.Millisecond, RetryMax: 200 * time.Millisecond,
		Getenv: func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			return os.Getenv(k)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		p.Emit(context.Background(), audit.SealVerified{Header: audit.NewHeader(time.Now(), "node-a"), ShardID: fmt.Sprintf("shard-%02d", i), Digest: "d"})
	}
	deadline := time.Now().Add(30 * time.Second)
	for p.Stats().PendingRecords > 0 || p.Stats().LastSeq < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("not shipped: %+v", p.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	stop()
	code, out, errs := runCLIForTest(t, "audit", "verify", "--collector-file", file, "--seal.secret-file", secretFile)
	if code != exitOK || !strings.Contains(out, "the collector's copy is intact") || !strings.Contains(out, "worker     node-a: ") || strings.Contains(out, "spool      ") {
		t.Fatalf("collector file alone: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = runCLIForTest(t, "audit", "verify", "--collector-file", file, "--spool.dir", dir, "--seal.secret-file", secretFile)
	if code != exitOK || !strings.Contains(out, "result     intact") || !strings.Contains(out, "compared   worker node-a: ") {
		t.Fatalf("collector file and spool: exit %d\n%s%s", code, out, errs)
	}
	b, _ := os.ReadFile(file)
	altered := filepath.Join(t.TempDir(), "logs.jsonl")
	_ = os.WriteFile(altered, bytes.Replace(b, []byte(`"shard-07"`), []byte(`"shard-99"`), 1), 0o600)
	code, out, _ = runCLIForTest(t, "audit", "verify", "--collector-file", altered, "--spool.dir", dir)
	if code != exitFailed || !strings.Contains(out, `altered: attribute vramseal.shard.id is "shard-99" in the copy; the record's body says "shard-07"`) {
		t.Fatalf("altered file: exit %d\n%s", code, out)
	}
	if code, _, _ := runCLIForTest(t, "audit", "verify", "--collector-file", filepath.Join(dir, "none.jsonl")); code != exitUsage {
		t.Fatalf("missing collector file: exit %d", code)
	}
}
