package otel

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/audit/spool"
)

// sampleEvents returns one event of every type.
func sampleEvents(now time.Time) []audit.Event {
	h := func() audit.Header { return audit.NewHeader(now, "node-a") }
	withCaller := func(h audit.Header) audit.Header {
		h.Cause = audit.Cause{Kind: audit.CauseAPI, Caller: &audit.Caller{UID: 65534, GID: 65534, PID: 4242, Executable: "/usr/bin/curl"}}
		return h
	}
	return []audit.Event{
		audit.VRAMSealed{Header: h(), ShardID: "llama-00001", GPUDevice: 1, VRAMBytes: 4096, Digest: "sha256-tree-v1:ab", ContentSHA256: "cd", LeafSize: 262144, ModelRef: "llama@1", Seal: `{"shard_id":"llama-00001"}`, SealSignature: "sig"},
		audit.SealVerified{Header: h(), ShardID: "llama-00001", GPUDevice: 1, Digest: "sha256-tree-v1:ab"},
		audit.SealVerificationFailed{Header: h(), ShardID: "llama-00001", GPUDevice: 1, Reason: audit.ReasonDigestMismatch, ExpectedDigest: "sha256-tree-v1:ab", ActualDigest: "sha256-tree-v1:ef", FirstBadOffset: 262144, BadChunks: 2},
		audit.VRAMDeallocated{Header: h(), ShardID: "llama-00001", GPUDevice: 1, FreedBytes: 4096, RemainingUsed: 0},
		audit.PolicyViolation{Header: h(), Policy: audit.PolicyVRAMOnly, Violation: audit.ViolationECCDisabled, Details: "ECC is off", ActionTaken: audit.ActionSealingBlocked, GPUDevice: 0},
		audit.VRAMAllocated{Header: h(), ShardID: "llama-00002", GPUDevice: 0, RequestedBytes: 8192, UsedAfter: 8192},
		audit.VRAMAllocationFailed{Header: h(), ShardID: "llama-00003", GPUDevice: 0, RequestedBytes: 1 << 40, AvailableBytes: 1 << 30, Reason: audit.ReasonInsufficientVRAM},
		audit.ControlRateLimited{Header: withCaller(h()), Endpoint: "POST /v1/verify/seal", RequestsPerSecond: "2", Burst: 4},
	}
}

func testLogger() (*logrus.Logger, *test.Hook) {
	l, h := test.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return l, h
}

func envWith(vars map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := vars[k]; ok {
			return v
		}
		return os.Getenv(k)
	}
}

func newTestPipeline(t *testing.T, cfg Config) *Pipeline {
	t.Helper()
	if cfg.Spool.Dir == "" {
		cfg.Spool.Dir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger()
	}
	if cfg.WorkerID == "" {
		cfg.WorkerID = "node-a"
	}
	cfg.Spool.CheckpointKey = make([]byte, 32)
	cfg.RetryMin, cfg.RetryMax = 100*time.Millisecond, 500*time.Millisecond
	p, err := NewPipeline(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}

// TestCollectorReceivesEveryEvent sends one event of each type, each inside
// a span, to a real collector over gRPC and over HTTP, and checks what the
// collector stored: event name, severity, every mapped attribute, the event
// id, the span's trace id, and the caller's trace id from a traceparent.
func TestCollectorReceivesEveryEvent(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(proto, func(t *testing.T) {
			c := newCollector(t)
			c.start(t)
			t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint(proto))
			t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test")
			counters := audit.NewCounters()
			p := newTestPipeline(t, Config{ServiceVersion: "1.2.3", Counters: counters,
				Getenv: envWith(map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": proto, "NODE_NAME": "k8s-node-7"})})
			tracer := p.TracerProvider().Tracer("test")

			// A caller's traceparent, as the control API receives it.
			const callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
			carrier := propagation.MapCarrier{"traceparent": "00-" + callerTrace + "-00f067aa0ba902b7-01"}
			callerCtx := propagation.TraceContext{}.Extract(context.Background(), carrier)

			want := map[string]bool{}
			wantTrace := map[string]string{}
			events := sampleEvents(time.Now())
			for i, ev := range events {
				parent := context.Background()
				if i == 2 { // the verification that failed was asked for by a caller
					parent = callerCtx
				}
				ctx, span := tracer.Start(parent, "vramseal.op")
				r := p.Emit(ctx, ev)
				if ev.Severity() == audit.SeverityCritical {
					if err := audit.WaitDurable(ctx, r, 2*time.Second); err != nil {
						t.Fatalf("CRITICAL event not durable: %v", err)
					}
				}
				span.End()
				want[ev.Head().ID] = true
				wantTrace[ev.Head().ID] = span.SpanContext().TraceID().String()
			}
			// An event emitted with only the remote span context.
			direct := audit.SealVerified{Header: audit.NewHeader(time.Now(), "node-a"), ShardID: "s", Digest: "d"}
			p.Emit(callerCtx, direct)
			want[direct.ID] = true
			wantTrace[direct.ID] = callerTrace
			if wantTrace[events[2].Head().ID] != callerTrace {
				t.Fatalf("span under the caller's traceparent has trace %s", wantTrace[events[2].Head().ID])
			}

			got := c.waitFor(t, want, 30*time.Second)
			for _, ev := range events {
				g := got[ev.Head().ID]
				if g.EventName != audit.NamePrefix+ev.Name() {
					t.Errorf("%s: event name %q", ev.Name(), g.EventName)
				}
				if g.SeverityNumber != int(ev.Severity()) || g.SeverityText != ev.Severity().String() {
					t.Errorf("%s: severity %d %q", ev.Name(), g.SeverityNumber, g.SeverityText)
				}
				if g.TraceID != wantTrace[ev.Head().ID] || g.SpanID == "" {
					t.Errorf("%s: trace %q span %q, want trace %s", ev.Name(), g.TraceID, g.SpanID, wantTrace[ev.Head().ID])
				}
				if g.Attrs[KeyWorkerID] != "node-a" || g.Attrs[KeySeq] == nil || g.Attrs[KeyPrevHash] == nil {
					t.Errorf("%s: common attributes missing: %v", ev.Name(), g.Attrs)
				}
				for _, f := range ev.Fields() {
					key, ok := AttributeKey(ev.Name(), f.Key)
					if !ok {
						t.Errorf("%s: field %s has no mapping", ev.Name(), f.Key)
						continue
					}
					wantV := fmt.Sprint(f.Value)
					if gotV, ok := g.Attrs[key]; !ok || fmt.Sprint(gotV) != wantV {
						t.Errorf("%s: attribute %s = %v, want %s", ev.Name(), key, gotV, wantV)
					}
				}
				for k, v := range map[string]string{"service.name": "vramseal-agent", "service.version": "1.2.3", "k8s.node.name": "k8s-node-7", KeyWorkerID: "node-a", "deployment.environment.name": "test"} {
					if g.Resource[k] != v {
						t.Errorf("resource %s = %v, want %s", k, g.Resource[k], v)
					}
				}
				if g.Resource["host.name"] == nil {
					t.Error("resource host.name missing")
				}
			}
			if g := got[direct.ID]; g.TraceID != callerTrace {
				t.Errorf("event under a remote span context: trace %q, want the caller's %s", g.TraceID, callerTrace)
			}
			if err := p.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			// The spans reach the same collector.
			deadline := time.Now().Add(10 * time.Second)
			for !c.traceIDs(t)[callerTrace] {
				if time.Now().After(deadline) {
					t.Fatal("the span under the caller's trace did not reach the collector")
				}
				time.Sleep(100 * time.Millisecond)
			}
			if s := counters.Snapshot(); s.Events[audit.NameSealVerified] != 2 {
				t.Errorf("counters: %v", s.Events)
			}
		})
	}
}

// TestCollectorDownThenUp emits 10 000 events while no collector listens,
// then starts one: every event arrives, the cursor catches up, and the
// failing exports were counted without flooding the log.
func TestCollectorDownThenUp(t *testing.T) {
	for _, proto := range []string{ProtocolGRPC, ProtocolHTTP} {
		t.Run(proto, func(t *testing.T) { collectorDownThenUp(t, proto) })
	}
}

func collectorDownThenUp(t *testing.T, proto string) {
	c := newCollector(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", c.endpoint(proto))
	log, hook := testLogger()
	p := newTestPipeline(t, Config{Logger: log, Getenv: envWith(map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": proto})})
	want := map[string]bool{}
	now := time.Now()
	for i := 0; i < 10000; i++ {
		ev := audit.VRAMAllocated{Header: audit.NewHeader(now, "node-a"), ShardID: fmt.Sprintf("s-%d", i), RequestedBytes: uint64(i)}
		p.Emit(context.Background(), ev)
		want[ev.ID] = true
		if i%2000 == 1999 {
			time.Sleep(10 * time.Millisecond) // let the writer keep up, as real traffic would
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for p.Stats().PendingRecords < 10000 || p.Stats().ExportFailures < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("stats while the collector is down: %+v", p.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
	st := p.Stats()
	if st.OldestPending.IsZero() || st.Lost[audit.LossQueueFull] != 0 {
		t.Fatalf("stats: %+v", st)
	}
	warns := 0
	for _, e := range hook.AllEntries() {
		if e.Level <= logrus.WarnLevel && e.Data["component"] == "audit-pipeline" {
			warns++
		}
	}
	if warns > 1 {
		t.Fatalf("%d warnings for %d failed exports: the log is flooded", warns, st.ExportFailures)
	}
	c.start(t)
	c.waitFor(t, want, 40*time.Second)
	deadline = time.Now().Add(10 * time.Second)
	for p.Stats().PendingRecords != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("cursor did not catch up: %+v", p.Stats())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPipelineWithoutCollector covers what needs no collector: the spool is
// the only copy with OTEL_LOGS_EXPORTER=none, Stats, Emit after Close, and
// bad OTEL_* values refused with a clear error.
func TestPipelineWithoutCollector(t *testing.T) {
	dir := t.TempDir()
	counters := audit.NewCounters()
	p := newTestPipeline(t, Config{Spool: spool.Config{Dir: dir}, Counters: counters,
		Getenv: envWith(map[string]string{"OTEL_LOGS_EXPORTER": "none", "OTEL_TRACES_EXPORTER": "none"})})
	ctx, span := p.TracerProvider().Tracer("t").Start(context.Background(), "op")
	if !span.SpanContext().IsValid() {
		t.Fatal("the tracer provider makes no real spans")
	}
	for _, ev := range sampleEvents(time.Now()) {
		if err := audit.WaitDurable(ctx, p.Emit(ctx, ev), 2*time.Second); err != nil {
			t.Fatalf("%s: %v", ev.Name(), err)
		}
	}
	span.End()
	deadline := time.Now().Add(5 * time.Second)
	for p.Stats().PendingRecords != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("with no exporter the cursor should follow the spool: %+v", p.Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := p.Stats()
	if st.Bytes == 0 || len(st.Lost) != 3 || st.ExportFailures != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	late := audit.SealVerified{Header: audit.NewHeader(time.Now(), "node-a")}
	if err := p.Emit(context.Background(), late).Wait(context.Background()); err != audit.ErrClosed {
		t.Fatalf("Emit after Close: %v", err)
	}
	if s := counters.Snapshot(); s.Failures[audit.NameSealVerified] != 1 || s.Events[audit.NameVRAMSealed] != 1 {
		t.Fatalf("counters: %+v", s)
	}
	// The spool holds every event with its span's trace id.
	sp, err := spool.Open(spool.Config{Dir: dir, Logger: p.log})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close(context.Background())
	recs, _ := sp.NewReader(0).Read(100)
	n := 0
	for _, r := range recs {
		if r.Name != spool.NameCheckpoint {
			n++
			if trace.TraceID(r.TraceID) != span.SpanContext().TraceID() {
				t.Fatalf("%s: trace id %x", r.Name, r.TraceID)
			}
		}
	}
	if want := len(sampleEvents(time.Now())); n != want {
		t.Fatalf("%d events in the spool, want %d", n, want)
	}
	for _, bad := range []map[string]string{
		{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_LOGS_EXPORTER": "console"},
		{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
	} {
		_, err := NewPipeline(context.Background(), Config{Spool: spool.Config{Dir: t.TempDir()}, Getenv: envWith(bad)})
		if err == nil {
			t.Fatalf("%v accepted", bad)
		}
	}
}
