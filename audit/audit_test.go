package audit

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/trace"
)

func allEvents() []Event {
	h := NewHeader(time.Unix(1, 0), "w")
	return []Event{
		VRAMSealed{Header: h}, SealVerified{Header: h}, SealVerificationFailed{Header: h},
		VRAMDeallocated{Header: h}, PolicyViolation{Header: h}, VRAMAllocated{Header: h},
		VRAMAllocationFailed{Header: h}, VRAMOpened{Header: h}, VRAMClosed{Header: h}, ControlRateLimited{Header: h},
		DebugFaultInjected{Header: h},
		GPUXID{Header: h}, GPUForeignProcess{Header: h},
	}
}

// Every event of the specification exists with its name, severity and
// required fields (docs/audit-events.md).
func TestEventSchema(t *testing.T) {
	required := map[string][]string{
		NameVRAMSealed:             {"shard_id", "gpu_device", "vram_bytes", "digest", "content_sha256", "leaf_size", "model_ref", "seal_signature", "origin"},
		NameSealVerified:           {"shard_id", "gpu_device", "digest"},
		NameSealVerificationFailed: {"shard_id", "reason", "expected_digest", "actual_digest", "severity", "gpu_device", "first_bad_offset", "bad_chunks"},
		NameVRAMDeallocated:        {"shard_id", "freed_bytes", "remaining_used", "gpu_device", "reason", "still_mapped_by"},
		NamePolicyViolation:        {"policy", "violation", "details", "action_taken", "gpu_device", "severity"},
		NameVRAMAllocated:          {"shard_id", "gpu_device", "requested_bytes", "used_after", "available_bytes"},
		NameVRAMAllocationFailed:   {"shard_id", "gpu_device", "requested_bytes", "available_bytes", "reason"},
		NameVRAMOpened:             {"shard_id", "gpu_device"},
		NameVRAMClosed:             {"shard_id", "gpu_device", "reason"},
		NameControlRateLimited:     {"endpoint", "requests_per_second", "burst"},
		NameDebugFaultInjected:     {"fault", "shard_id", "gpu_device", "details"},
		NameGPUXID:                 {"gpu_device", "xid", "count"},
		NameGPUForeignProcess:      {"gpu_device", "pid", "executable", "used_bytes", "sealed_shards", "suppressed"},
	}
	severity := map[string]Severity{
		NameVRAMSealed: SeverityInfo, NameSealVerified: SeverityInfo, NameSealVerificationFailed: SeverityCritical,
		NameVRAMDeallocated: SeverityInfo, NamePolicyViolation: SeverityError, NameVRAMAllocated: SeverityInfo,
		NameVRAMAllocationFailed: SeverityWarn, NameVRAMOpened: SeverityInfo, NameVRAMClosed: SeverityInfo, NameControlRateLimited: SeverityWarn, NameDebugFaultInjected: SeverityWarn,
		NameGPUXID: SeverityError, NameGPUForeignProcess: SeverityWarn,
	}
	seen := map[string]bool{}
	for _, ev := range allEvents() {
		seen[ev.Name()] = true
		if ev.Severity() != severity[ev.Name()] {
			t.Errorf("%s: severity %v", ev.Name(), ev.Severity())
		}
		keys := map[string]bool{}
		for _, f := range ev.Fields() {
			if keys[f.Key] {
				t.Errorf("%s: field %s twice", ev.Name(), f.Key)
			}
			keys[f.Key] = true
			switch f.Value.(type) {
			case string, int64, uint64, bool:
			default:
				t.Errorf("%s.%s: value of type %T", ev.Name(), f.Key, f.Value)
			}
		}
		for _, k := range required[ev.Name()] {
			if !keys[k] {
				t.Errorf("%s: missing field %s", ev.Name(), k)
			}
		}
	}
	if len(seen) != len(Names) || len(Names) != 13 {
		t.Fatalf("events %v, names %v", seen, Names)
	}
	if SeverityCritical != 21 || SeverityCritical.String() != "CRITICAL" || SeverityError != 17 || SeverityWarn != 13 || SeverityInfo != 9 {
		t.Fatal("severity numbers differ from docs/audit-events.md")
	}
}

func TestIDsUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 10000 {
		id := NewID()
		if seen[id] {
			t.Fatalf("duplicate id %s", id)
		}
		seen[id] = true
	}
}

func TestReceipt(t *testing.T) {
	ctx := context.Background()
	r, settle := NewReceipt()
	if err := WaitDurable(ctx, r, 10*time.Millisecond); !errors.Is(err, ErrDurabilityTimeout) {
		t.Fatalf("pending receipt: %v", err)
	}
	settle(nil)
	settle(errors.New("second settle is ignored"))
	if err := WaitDurable(ctx, r, time.Second); err != nil {
		t.Fatalf("settled: %v", err)
	}
	if err := (Receipt{}).Wait(ctx); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("zero receipt: %v", err)
	}
	// A cancelled caller does not cut the bounded wait short.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	r2, settle2 := NewReceipt()
	go func() { time.Sleep(5 * time.Millisecond); settle2(nil) }()
	if err := WaitDurable(cctx, r2, time.Second); err != nil {
		t.Fatalf("cancelled caller: %v", err)
	}
}

func TestLogEmitter(t *testing.T) {
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	log.SetFormatter(&logrus.JSONFormatter{})
	c := NewCounters()
	e := NewLogEmitter(log, c)
	r := e.Emit(context.Background(), SealVerificationFailed{Header: NewHeader(time.Now(), "w"), ShardID: "s1", Reason: ReasonDigestMismatch})
	if err := r.Wait(context.Background()); !errors.Is(err, ErrNotDurable) {
		t.Fatalf("receipt: %v", err)
	}
	out := buf.String()
	for _, want := range []string{`"event":"vramseal.seal.verification_failed"`, `"shard_id":"s1"`, `"event_severity":"CRITICAL"`, `"level":"error"`} {
		if !bytes.Contains([]byte(out), []byte(want)) {
			t.Errorf("log line lacks %s: %s", want, out)
		}
	}
	if s := c.Snapshot(); s.Events[NameSealVerificationFailed] != 1 || s.Events[NameVRAMSealed] != 0 {
		t.Fatalf("counters %+v", s)
	}
	if bytes.Contains([]byte(out), []byte("trace_id")) {
		t.Errorf("trace_id logged without a span: %s", out)
	}
}

func TestLogEmitterCarriesTheTrace(t *testing.T) {
	var buf bytes.Buffer
	log := logrus.New()
	log.SetOutput(&buf)
	log.SetFormatter(&logrus.JSONFormatter{})
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	ctx := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled}))
	NewLogEmitter(log, nil).Emit(ctx, SealVerified{Header: NewHeader(time.Now(), "w"), ShardID: "s1"})
	for _, want := range []string{`"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"`, `"span_id":"00f067aa0ba902b7"`} {
		if !bytes.Contains(buf.Bytes(), []byte(want)) {
			t.Errorf("log line lacks %s: %s", want, buf.String())
		}
	}
}

func TestTee(t *testing.T) {
	primary, echo := &Recorder{}, &Recorder{}
	primary.SetDurability(errors.New("primary's answer"))
	ev := VRAMAllocated{Header: NewHeader(time.Now(), "w")}
	r := Tee{Primary: primary, Also: []Emitter{echo}}.Emit(context.Background(), ev)
	if err := r.Wait(context.Background()); err == nil || err.Error() != "primary's answer" {
		t.Fatalf("receipt %v: want the primary's", err)
	}
	if len(primary.Events()) != 1 || len(echo.Events()) != 1 {
		t.Fatal("an emitter missed the event")
	}
}

// TestHeaderFields: the cause, the caller and the GPU's UUID come from the
// header, for every event, before its own fields.
func TestHeaderFields(t *testing.T) {
	h := NewHeader(time.Unix(1, 0), "w")
	if len(h.HeaderFields()) != 0 {
		t.Errorf("an empty header has fields %v", h.HeaderFields())
	}
	h.Cause = Cause{Kind: CauseAPI, Caller: &Caller{UID: 1000, GID: 100, PID: -1}}
	h.GPUUUID = "GPU-1"
	got := h.HeaderFields()
	want := []Field{{"cause", "api"}, {"caller_uid", int64(1000)}, {"caller_gid", int64(100)}, {"caller_pid", int64(-1)},
		{"caller_executable", ""}, {"gpu_uuid", "GPU-1"}}
	if len(got) != len(want) {
		t.Fatalf("header fields %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d: %v, want %v", i, got[i], want[i])
		}
	}
	for _, ev := range allEvents() {
		for _, f := range ev.Fields() {
			for _, hf := range want {
				if f.Key == hf.Key {
					t.Errorf("%s has its own %s: it comes from the header", ev.Name(), f.Key)
				}
			}
		}
	}
}
