package otel

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/internal/testenv"
)

// collector runs the pinned OpenTelemetry Collector (make test builds it
// and exports VRAMSEAL_OTELCOL) with the OTLP receiver on two loopback
// ports and the file exporter writing logs and traces as OTLP JSON lines.
type collector struct {
	bin       string
	dir       string
	grpcPort  int
	httpPort  int
	cmd       *exec.Cmd
	logsFile  string
	traceFile string
	// args are more command-line arguments (feature gates).
	args []string
}

func newCollector(t *testing.T) *collector {
	t.Helper()
	bin := testenv.Tool(t, "VRAMSEAL_OTELCOL")
	dir := t.TempDir()
	c := &collector{bin: bin, dir: dir, grpcPort: freePort(t), httpPort: freePort(t),
		logsFile: filepath.Join(dir, "logs.jsonl"), traceFile: filepath.Join(dir, "traces.jsonl")}
	cfg := fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc: {endpoint: "127.0.0.1:%d"}
      http: {endpoint: "127.0.0.1:%d"}
exporters:
  file/logs: {path: %q, flush_interval: 100ms}
  file/traces: {path: %q, flush_interval: 100ms}
service:
  telemetry:
    metrics: {level: none}
  pipelines:
    logs: {receivers: [otlp], exporters: [file/logs]}
    traces: {receivers: [otlp], exporters: [file/traces]}
`, c.grpcPort, c.httpPort, c.logsFile, c.traceFile)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func (c *collector) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(c.dir, "collector.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command(c.bin, append([]string{"--config=file:" + filepath.Join(c.dir, "config.yaml")}, c.args...)...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, port := range []int{c.grpcPort, c.httpPort} {
		for {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
			if err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(c.dir, "collector.log"))
				t.Fatalf("collector did not listen on %d: %s", port, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (c *collector) stop() {
	if c.cmd != nil && c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = c.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = c.cmd.Process.Kill()
			<-done
		}
		c.cmd = nil
	}
}

func (c *collector) endpoint(protocol string) string {
	if protocol == ProtocolGRPC {
		return fmt.Sprintf("http://127.0.0.1:%d", c.grpcPort)
	}
	return fmt.Sprintf("http://127.0.0.1:%d", c.httpPort)
}

// gotRecord is one log record as the collector wrote it.
type gotRecord struct {
	EventName      string
	SeverityNumber int
	SeverityText   string
	TraceID        string
	SpanID         string
	Body           string
	Attrs          map[string]any
	Resource       map[string]any
}

type otlpValue struct {
	StringValue *string `json:"stringValue"`
	IntValue    *string `json:"intValue"`
	BoolValue   *bool   `json:"boolValue"`
}

type otlpKV struct {
	Key   string    `json:"key"`
	Value otlpValue `json:"value"`
}

func kvMap(kvs []otlpKV) map[string]any {
	m := map[string]any{}
	for _, kv := range kvs {
		switch {
		case kv.Value.StringValue != nil:
			m[kv.Key] = *kv.Value.StringValue
		case kv.Value.IntValue != nil:
			n, _ := strconv.ParseInt(*kv.Value.IntValue, 10, 64)
			m[kv.Key] = n
		case kv.Value.BoolValue != nil:
			m[kv.Key] = *kv.Value.BoolValue
		}
	}
	return m
}

// records parses the file exporter's log output.
func (c *collector) records(t *testing.T) []gotRecord {
	t.Helper()
	f, err := os.Open(c.logsFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []gotRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var req struct {
			ResourceLogs []struct {
				Resource struct {
					Attributes []otlpKV `json:"attributes"`
				} `json:"resource"`
				ScopeLogs []struct {
					LogRecords []struct {
						EventName      string    `json:"eventName"`
						SeverityNumber int       `json:"severityNumber"`
						SeverityText   string    `json:"severityText"`
						TraceID        string    `json:"traceId"`
						SpanID         string    `json:"spanId"`
						Body           otlpValue `json:"body"`
						Attributes     []otlpKV  `json:"attributes"`
					} `json:"logRecords"`
				} `json:"scopeLogs"`
			} `json:"resourceLogs"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			continue // a line being written
		}
		for _, rl := range req.ResourceLogs {
			res := kvMap(rl.Resource.Attributes)
			for _, sl := range rl.ScopeLogs {
				for _, lr := range sl.LogRecords {
					g := gotRecord{EventName: lr.EventName, SeverityNumber: lr.SeverityNumber, SeverityText: lr.SeverityText,
						TraceID: strings.ToLower(lr.TraceID), SpanID: strings.ToLower(lr.SpanID), Attrs: kvMap(lr.Attributes), Resource: res}
					if lr.Body.StringValue != nil {
						g.Body = *lr.Body.StringValue
					}
					out = append(out, g)
				}
			}
		}
	}
	return out
}

// waitFor polls the collector's output until every id in want arrived.
func (c *collector) waitFor(t *testing.T, want map[string]bool, timeout time.Duration) map[string]gotRecord {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := map[string]gotRecord{}
		for _, r := range c.records(t) {
			if id, ok := r.Attrs[KeyRecordUID].(string); ok {
				got[id] = r
			}
		}
		missing := 0
		for id := range want {
			if _, ok := got[id]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d records did not arrive at the collector", missing, len(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// traceIDs returns the trace ids of the spans the collector wrote.
func (c *collector) traceIDs(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(c.traceFile)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		var req struct {
			ResourceSpans []struct {
				ScopeSpans []struct {
					Spans []struct {
						TraceID string `json:"traceId"`
					} `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if json.Unmarshal([]byte(line), &req) != nil {
			continue
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					ids[strings.ToLower(s.TraceID)] = true
				}
			}
		}
	}
	return ids
}

var _ = context.Background
