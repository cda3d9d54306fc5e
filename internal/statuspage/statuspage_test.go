package statuspage_test

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/statuspage"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
)

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

// Fakes of the agent's parts, as small as the interfaces.

type fakeShards struct {
	gpus   []int
	shards []sealer.ShardStatus
}

func (f fakeShards) GPUs() []int                { return f.gpus }
func (f fakeShards) List() []sealer.ShardStatus { return f.shards }

type fakeSchedule map[string]time.Time

func (f fakeSchedule) NextDue(id string) (time.Time, bool) { t, ok := f[id]; return t, ok }

type fakePolicy struct {
	compliant  map[int]bool
	violations []policy.Violation
}

func (f fakePolicy) Compliant() map[int]bool        { return f.compliant }
func (f fakePolicy) Violations() []policy.Violation { return f.violations }

type fakeTelemetry collector.GPUSnapshot

func (f fakeTelemetry) GPUTelemetry() collector.GPUSnapshot { return collector.GPUSnapshot(f) }

type fakeEvents struct {
	evs   []audit.Event
	total uint64
}

func (f fakeEvents) Events() ([]audit.Event, uint64) { return f.evs, f.total }

const (
	hostileID  = `<script>alert("id")</script>`
	hostileRef = `"><img src=x onerror=alert(1)>`
)

func shard(id string, gpu int, size uint64, state string) sealer.ShardStatus {
	return sealer.ShardStatus{
		Seal:  sealer.Seal{ShardID: id, GPUDevice: gpu, VRAMBytes: size, ModelRef: "org/model@rev"},
		State: state, LastVerifiedAt: t0.Add(-30 * time.Second), LastResult: "ok", Origin: sealer.OriginSealed,
	}
}

// source is a node with two GPUs: GPU 0 holds three shards (one failed, one
// with a hostile id and model reference), GPU 1 is blocked by the policy.
func source() statuspage.Source {
	hostile := shard(hostileID, 0, 4<<20, sealer.StateSealed)
	hostile.Seal.ModelRef = hostileRef
	failed := shard("llama-00002", 0, 2<<30, sealer.StateFailed)
	failed.LastResult, failed.LastCheckedAt = "digest_mismatch", t0.Add(-5*time.Second)
	return statuspage.Source{
		WorkerID: "node-a", Device: "sim", Version: "1.2.3", Simulated: true, VerifyInterval: 5 * time.Minute,
		Ready: func() (bool, string) { return false, "GPU 1: integrated_gpu (<b>integrated</b>)" },
		Links: []statuspage.Link{{Href: "/metrics", Text: "Metrics"}, {Href: "/healthz", Text: "Health"}, {Href: "/readyz", Text: "Readiness"}},
		Shards: fakeShards{gpus: []int{0, 1}, shards: []sealer.ShardStatus{
			hostile, shard("llama-00001", 0, 1<<30, sealer.StateSealed), failed,
		}},
		Schedule: fakeSchedule{"llama-00001": t0.Add(90 * time.Second), "llama-00002": t0.Add(-10 * time.Second)},
		Policy: fakePolicy{compliant: map[int]bool{0: true, 1: false},
			violations: []policy.Violation{{GPU: 1, Violation: audit.ViolationIntegratedGPU, Details: "<i>integrated</i> GPU"}}},
		Telemetry: fakeTelemetry{Fresh: true, ReadAt: t0.Add(-time.Second), GPUs: []collector.GPUTelemetry{
			{Index: 0, UUID: "GPU-0", Name: "vramseal simulated GPU", Up: true, TotalBytes: 8 << 30, UsedBytes: 4<<30 + 4<<20, FreeBytes: 4<<30 - 4<<20, HasECC: true, ECCCorrected: 7, ECCUncorrected: 2,
				XIDs: map[uint64]uint64{79: 1, 48: 3}},
			{Index: 1, UUID: "GPU-1", Name: "vramseal simulated GPU", Up: true, TotalBytes: 8 << 30, FreeBytes: 8 << 30, HasECC: true},
		}},
		Audit: collector.AuditStatsFunc(func() audit.SpoolStats {
			return audit.SpoolStats{PendingRecords: 12, Bytes: 3 << 20, OldestPending: t0.Add(-2 * time.Minute), ExportFailures: 4,
				Lost: map[string]uint64{audit.LossQueueFull: 0, audit.LossDiskFull: 0, audit.LossWriteError: 0}, LastSeq: 40, ShippedSeq: 28}
		}),
		Events: fakeEvents{total: 3, evs: []audit.Event{
			audit.SealVerificationFailed{Header: audit.Header{ID: "ev-3", Time: t0.Add(-5 * time.Second), WorkerID: "node-a"},
				ShardID: "llama-00002", GPUDevice: 0, Reason: audit.ReasonDigestMismatch, ExpectedDigest: "sha256-tree-v1:aa", ActualDigest: "sha256-tree-v1:bb", FirstBadOffset: 4096, BadChunks: 1},
			audit.VRAMSealed{Header: audit.Header{ID: "ev-2", Time: t0.Add(-time.Minute)}, ShardID: hostileID, GPUDevice: 0, ModelRef: hostileRef, Seal: `{"secret":"seal-record"}`, SealSignature: "sig-value"},
			audit.PolicyViolation{Header: audit.Header{ID: "ev-1", Time: t0.Add(-2 * time.Minute)}, Policy: audit.PolicyVRAMOnly,
				Violation: audit.ViolationIntegratedGPU, Details: "<i>integrated</i> GPU", ActionTaken: audit.ActionSealingBlocked, GPUDevice: 1},
		}},
	}
}

func render(t *testing.T, src statuspage.Source, mode statuspage.Mode) string {
	t.Helper()
	var b bytes.Buffer
	if err := statuspage.Render(&b, statuspage.Snapshot(src, mode, t0)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func mustContain(t *testing.T, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("page lacks %q", w)
		}
	}
}

func mustNotContain(t *testing.T, body string, unwanted ...string) {
	t.Helper()
	for _, u := range unwanted {
		if strings.Contains(body, u) {
			t.Errorf("page contains %q", u)
		}
	}
}

func TestRenderEscapesUserInput(t *testing.T) {
	for _, mode := range []statuspage.Mode{statuspage.Summary, statuspage.Full} {
		t.Run(string(mode), func(t *testing.T) {
			body := render(t, source(), mode)
			mustNotContain(t, body, "<script", "<img", "<i>integrated", "<b>integrated")
			if n := strings.Count(body, "&lt;script&gt;alert(&#34;id&#34;)&lt;/script&gt;"); n < 2 {
				t.Errorf("escaped shard id appears %d times, want it in the shards table and the events", n)
			}
			mustContain(t, body, "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;", "&lt;i&gt;integrated&lt;/i&gt; GPU", "&lt;b&gt;integrated&lt;/b&gt;")
		})
	}
}

func TestRenderSimulatedTitleAndBanner(t *testing.T) {
	body := render(t, source(), statuspage.Summary)
	if !regexp.MustCompile(`<title>[^<]*SIMULATED[^<]*</title>`).MatchString(body) {
		t.Error("the title does not say SIMULATED")
	}
	mustContain(t, body, `<div class="banner" id="simulated">SIMULATED GPUs (device: sim)`)
	real := source()
	real.Simulated, real.Device = false, "cuda"
	mustNotContain(t, render(t, real, statuspage.Summary), "SIMULATED")
}

func TestRenderEverySection(t *testing.T) {
	body := render(t, source(), statuspage.Summary)
	mustContain(t, body,
		`<meta http-equiv="refresh" content="10">`,
		// header: worker, readiness and its reason
		"worker <b>node-a</b>", "not ready", "GPU 1: integrated_gpu",
		// GPUs: the bar, policy state, ECC counts
		`<section id="gpus">`, `id="gpu-0"`, `id="gpu-1"`,
		`<div class="s" style="width:`, "sealed 3.0 GiB", "others 1.0 GiB", "free 4.0 GiB", "of 8.0 GiB",
		"policy ok", "policy: blocked", "integrated_gpu", "ECC corrected 7, uncorrected", ">2<",
		"critical XIDs: "+`<span class="badge bad">XID 48 × 3</span>, <span class="badge bad">XID 79 × 1</span>`,
		// shards: every column, failed first, ages and due times
		`<section id="shards">`, "<th>origin</th>", "<th>leases</th>", "<th>next due</th>",
		"llama-00001", "org/model@rev", "30s ago", "in 1m30s", "due now (10s late)", `digest_mismatch <span class="muted">(checked 5s ago)</span>`, "1.0 GiB",
		// audit pipeline
		`<section id="audit">`, "export failing", "12 records pending", "spool 3.0 MiB", "2m00s old", "written 40, shipped 28", "export failures</dt><dd>4<",
		// events
		`<section id="events">`, "vramseal.seal.verification_failed", "CRITICAL", "vramseal.policy.violation", "The last 3 of 3 events",
		// links kept
		`<a href="/metrics">Metrics</a>`, `<a href="/healthz">Health</a>`, `<a href="/readyz">Readiness</a>`,
	)
	failed, ok := strings.Index(body, "llama-00002"), strings.Index(body, "llama-00001")
	if failed < 0 || ok < 0 || failed > ok {
		t.Error("the failed shard is not listed first")
	}
	mustContain(t, body, `<tr class="failed"><td><code>llama-00002</code>`)
	if !regexp.MustCompile(`<td>sealed</td><td><span class="badge ok">sealed</span></td><td>30s ago</td><td>in 1m30s</td><td class="n">0</td>`).MatchString(body) {
		t.Error("a shard row lacks origin sealed and 0 leases")
	}
}

func TestSummaryHidesEventDetailsFullShowsThem(t *testing.T) {
	details := []string{"reason=digest_mismatch", "first_bad_offset=4096", "id ev-3", "action_taken=sealing_blocked", "<th>details</th>"}
	summary := render(t, source(), statuspage.Summary)
	mustNotContain(t, summary, details...)
	mustContain(t, summary, "vramseal-agent audit show")
	full := render(t, source(), statuspage.Full)
	mustContain(t, full, details...)
	// The seal record and its signature stay out even in full.
	mustNotContain(t, full, "seal-record", "sig-value")
}

func TestOffShowsOnlyTheLinks(t *testing.T) {
	body := render(t, source(), statuspage.Off)
	mustContain(t, body, `<a href="/metrics">Metrics</a>`, `<a href="/readyz">Readiness</a>`, "web.status_page: off", "SIMULATED")
	mustNotContain(t, body, `<section`, "llama-00001", "GPU-0", "records pending")
}

func TestManyShardsAreBounded(t *testing.T) {
	src := source()
	var shards []sealer.ShardStatus
	for i := 0; i < 5000; i++ {
		shards = append(shards, shard(fmt.Sprintf("model-shard-%05d", i), i%8, 1<<20, sealer.StateSealed))
	}
	shards[4999].State = sealer.StateFailed // last by id: still shown, first
	src.Shards = fakeShards{gpus: []int{0, 1, 2, 3, 4, 5, 6, 7}, shards: shards}
	src.Schedule = nil
	start := time.Now()
	body := render(t, src, statuspage.Full)
	took := time.Since(start)
	rows := strings.Count(body, "<tr") - strings.Count(body, "<thead><tr") - 3 // minus the event rows
	if rows != statuspage.MaxShardRows {
		t.Errorf("%d shard rows, want %d", rows, statuspage.MaxShardRows)
	}
	mustContain(t, body, "4500 more shards not shown", `<tr class="failed"><td><code>model-shard-04999</code>`, "shards <b>5000</b>")
	mustNotContain(t, body, "model-shard-00499<") // the 500th row is the failed one, so 00498 is the last sealed one
	if len(body) > 512<<10 {
		t.Errorf("page of %d bytes with 5000 shards, want at most 512 KiB", len(body))
	}
	t.Logf("5000 shards: %d bytes, rendered in %s", len(body), took)
}

func TestSnapshotWithoutTelemetryOrSources(t *testing.T) {
	src := source()
	src.Telemetry = fakeTelemetry{Err: errors.New("GPU telemetry read hung")}
	v := statuspage.Snapshot(src, statuspage.Summary, t0)
	if v.TelemetryError != "GPU telemetry read hung" {
		t.Errorf("telemetry error %q", v.TelemetryError)
	}
	if g := v.GPUs[0]; g.Telemetry || g.TotalBytes != 0 || g.SealedBytes != 3<<30+4<<20 || g.Shards != 3 || g.Failed != 1 {
		t.Errorf("GPU 0 without telemetry: %+v", g)
	}
	body := render(t, src, statuspage.Summary)
	mustContain(t, body, "GPU telemetry unavailable: GPU telemetry read hung", "(no telemetry)")

	src.Telemetry = fakeTelemetry{ReadAt: t0.Add(-time.Hour), GPUs: []collector.GPUTelemetry{{Index: 0, Up: true, TotalBytes: 1}}}
	if v := statuspage.Snapshot(src, statuspage.Summary, t0); !strings.Contains(v.TelemetryError, "stale") || v.GPUs[0].TotalBytes != 0 {
		t.Errorf("stale telemetry: %q, total %d", v.TelemetryError, v.GPUs[0].TotalBytes)
	}
	src.Telemetry = fakeTelemetry{Fresh: true, ReadAt: t0, GPUs: []collector.GPUTelemetry{{Index: 0, UUID: "GPU-0"}, {Index: 1, Up: true, TotalBytes: 8 << 30, FreeBytes: 8 << 30}}}
	mustContain(t, render(t, src, statuspage.Summary), `<span class="badge bad">lost</span>`)

	// No source at all: every section says it has no data.
	empty := render(t, statuspage.Source{WorkerID: "w"}, statuspage.Summary)
	mustContain(t, empty, "No GPUs.", "No shards sealed.", "No audit pipeline statistics.", "No audit events yet.", "ready")
}

func TestAuditState(t *testing.T) {
	for _, tc := range []struct {
		name  string
		st    audit.SpoolStats
		state string
	}{
		{"nothing pending", audit.SpoolStats{}, "up to date"},
		{"a fresh backlog", audit.SpoolStats{PendingRecords: 3, OldestPending: t0.Add(-10 * time.Second), ExportFailures: 9}, "shipping"},
		{"an old backlog", audit.SpoolStats{PendingRecords: 3, OldestPending: t0.Add(-6 * time.Minute)}, "behind"},
		{"an old backlog with export failures", audit.SpoolStats{PendingRecords: 3, OldestPending: t0.Add(-2 * time.Minute), ExportFailures: 1}, "export failing"},
		{"records lost", audit.SpoolStats{Lost: map[string]uint64{audit.LossDiskFull: 2}}, "records lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := source()
			src.Audit = collector.AuditStatsFunc(func() audit.SpoolStats { return tc.st })
			if got := statuspage.Snapshot(src, statuspage.Summary, t0).Audit.State; got != tc.state {
				t.Errorf("state %q, want %q", got, tc.state)
			}
		})
	}
}

func TestHandler(t *testing.T) {
	h := statuspage.Handler(source(), statuspage.Summary, func() time.Time { return t0 }, nil)
	do := func(method, path string) *httptest.ResponseRecorder {
		rw := httptest.NewRecorder()
		h.ServeHTTP(rw, httptest.NewRequest(method, path, nil))
		return rw
	}
	rw := do(http.MethodGet, "/")
	if rw.Code != 200 || rw.Header().Get("Content-Type") != "text/html; charset=utf-8" || !strings.Contains(rw.Body.String(), "llama-00001") {
		t.Fatalf("GET /: %d %q", rw.Code, rw.Header().Get("Content-Type"))
	}
	if csp := rw.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") || strings.Contains(csp, "script-src") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	if rw.Header().Get("Cache-Control") != "no-store" || rw.Header().Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("headers: %v", rw.Header())
	}
	if rw := do(http.MethodHead, "/"); rw.Code != 200 || rw.Body.Len() != 0 {
		t.Errorf("HEAD /: %d, %d bytes", rw.Code, rw.Body.Len())
	}
	if rw := do(http.MethodGet, "/nope"); rw.Code != 404 {
		t.Errorf("GET /nope: %d", rw.Code)
	}
	if rw := do(http.MethodPost, "/"); rw.Code != 405 {
		t.Errorf("POST /: %d", rw.Code)
	}
}

func TestParseMode(t *testing.T) {
	for _, s := range []string{"full", "summary", "off"} {
		if m, err := statuspage.ParseMode(s); err != nil || string(m) != s {
			t.Errorf("ParseMode(%q) = %q, %v", s, m, err)
		}
	}
	if _, err := statuspage.ParseMode("on"); err == nil {
		t.Error("ParseMode accepted on")
	}
}
