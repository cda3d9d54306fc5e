package collector_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/testenv"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

func TestAuditCounters(t *testing.T) {
	e := newEnv(t, envOpts{gpus: 1})
	e.seal(t, "a1", 0, 4096) // vram.allocated, vram.sealed
	e.counters.Failed("seal.verification_failed")
	want := `
# HELP vramseal_audit_events_total Audit events handed to the audit pipeline, by event name (without the vramseal. prefix).
# TYPE vramseal_audit_events_total counter
vramseal_audit_events_total{event="control.rate_limited"} 0
vramseal_audit_events_total{event="debug.fault_injected"} 0
vramseal_audit_events_total{event="gpu.foreign_process"} 0
vramseal_audit_events_total{event="gpu.xid"} 0
vramseal_audit_events_total{event="policy.violation"} 0
vramseal_audit_events_total{event="seal.verification_failed"} 0
vramseal_audit_events_total{event="seal.verified"} 0
vramseal_audit_events_total{event="vram.allocated"} 1
vramseal_audit_events_total{event="vram.allocation_failed"} 0
vramseal_audit_events_total{event="vram.closed"} 0
vramseal_audit_events_total{event="vram.deallocated"} 0
vramseal_audit_events_total{event="vram.opened"} 0
vramseal_audit_events_total{event="vram.sealed"} 1
# HELP vramseal_audit_emit_failures_total Audit events the pipeline failed to take or keep, by event name.
# TYPE vramseal_audit_emit_failures_total counter
vramseal_audit_emit_failures_total{event="control.rate_limited"} 0
vramseal_audit_emit_failures_total{event="debug.fault_injected"} 0
vramseal_audit_emit_failures_total{event="gpu.foreign_process"} 0
vramseal_audit_emit_failures_total{event="gpu.xid"} 0
vramseal_audit_emit_failures_total{event="policy.violation"} 0
vramseal_audit_emit_failures_total{event="seal.verification_failed"} 1
vramseal_audit_emit_failures_total{event="seal.verified"} 0
vramseal_audit_emit_failures_total{event="vram.allocated"} 0
vramseal_audit_emit_failures_total{event="vram.allocation_failed"} 0
vramseal_audit_emit_failures_total{event="vram.closed"} 0
vramseal_audit_emit_failures_total{event="vram.deallocated"} 0
vramseal_audit_emit_failures_total{event="vram.opened"} 0
vramseal_audit_emit_failures_total{event="vram.sealed"} 0
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "vramseal_audit_events_total", "vramseal_audit_emit_failures_total"); err != nil {
		t.Fatal(err)
	}
	// Without a spool there are no spool series.
	if got := lines(scrape(t, e.reg), "vramseal_audit_spool"); len(got) != 0 {
		t.Errorf("spool series without a spool: %q", got)
	}
}

func TestAuditSpoolStats(t *testing.T) {
	stats := audit.SpoolStats{
		PendingRecords: 12, Bytes: 4096, OldestPending: t0.Add(-90 * time.Second), QuarantinedFiles: 1,
		Lost: map[string]uint64{audit.LossDiskFull: 3}, ExportFailures: 7,
	}
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) {
		o.AuditStats = collector.AuditStatsFunc(func() audit.SpoolStats { return stats })
	}})
	want := fmt.Sprintf(`
# HELP vramseal_audit_spool_pending_records Audit records in the local spool not yet acknowledged by the OTel Collector.
# TYPE vramseal_audit_spool_pending_records gauge
vramseal_audit_spool_pending_records 12
# HELP vramseal_audit_spool_bytes Size of the local audit spool's files on disk.
# TYPE vramseal_audit_spool_bytes gauge
vramseal_audit_spool_bytes 4096
# HELP vramseal_audit_spool_oldest_pending_timestamp_seconds When the oldest pending audit record was written (the scrape time when none is pending, so the age is 0).
# TYPE vramseal_audit_spool_oldest_pending_timestamp_seconds gauge
vramseal_audit_spool_oldest_pending_timestamp_seconds %g
# HELP vramseal_audit_spool_quarantined_files Audit spool files set aside as damaged at start-up.
# TYPE vramseal_audit_spool_quarantined_files gauge
vramseal_audit_spool_quarantined_files 1
# HELP vramseal_audit_events_lost_total Audit records lost, by reason (queue_full, disk_full, write_error).
# TYPE vramseal_audit_events_lost_total counter
vramseal_audit_events_lost_total{reason="disk_full"} 3
vramseal_audit_events_lost_total{reason="queue_full"} 0
vramseal_audit_events_lost_total{reason="write_error"} 0
# HELP vramseal_audit_export_failures_total Failed exports of audit records to the OTel Collector.
# TYPE vramseal_audit_export_failures_total counter
vramseal_audit_export_failures_total 7
`, float64(t0.Add(-90*time.Second).Unix()))
	names := []string{"vramseal_audit_spool_pending_records", "vramseal_audit_spool_bytes", "vramseal_audit_spool_oldest_pending_timestamp_seconds",
		"vramseal_audit_spool_quarantined_files", "vramseal_audit_events_lost_total", "vramseal_audit_export_failures_total"}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}
	// Nothing pending: the oldest pending timestamp is the scrape time (age 0).
	stats = audit.SpoolStats{}
	if got := lines(scrape(t, e.reg), "vramseal_audit_spool_oldest_pending_timestamp_seconds "); len(got) != 1 || got[0] != fmt.Sprintf("vramseal_audit_spool_oldest_pending_timestamp_seconds %g", float64(t0.Unix())) {
		t.Errorf("nothing pending: %q", got)
	}
}

type compliance map[int]bool

func (c compliance) Compliant() map[int]bool { return c }

func TestPolicyAndInfo(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.Policy = compliance{0: true, 1: false} }})
	want := `
# HELP vramseal_policy_compliant Whether the GPU complies with the policy (1) or violates it and gets no shards (0).
# TYPE vramseal_policy_compliant gauge
vramseal_policy_compliant{gpu="0",policy="vram_only"} 1
vramseal_policy_compliant{gpu="1",policy="vram_only"} 0
# HELP vramseal_agent_info This agent, always 1: its worker id and its device backend (sim for the simulated GPU, cuda).
# TYPE vramseal_agent_info gauge
vramseal_agent_info{device="sim",worker_id="node-a"} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), "vramseal_policy_compliant", "vramseal_agent_info"); err != nil {
		t.Fatal(err)
	}
	if got := lines(scrape(t, e.reg), "vramseal_build_info{"); len(got) != 1 || !strings.Contains(got[0], `goversion="go`) {
		t.Errorf("build info: %q", got)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []collector.Options{{Device: "opencl"}, {GPUInterval: -time.Second}} {
		if _, err := collector.New(o); err == nil {
			t.Errorf("New(%+v) accepted", o)
		}
	}
	reg := prometheus.NewRegistry()
	if _, err := collector.Register(reg, collector.Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := collector.Register(reg, collector.Options{}); err == nil {
		t.Error("registering the collectors twice on one registry succeeded")
	}
}

// fullEnv is a registry with every source set, shards sealed, one verified,
// one failed, and the Go and process collectors, as the agent serves it.
func fullEnv(t testing.TB) *env {
	t.Helper()
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) {
		o.Schedule = overdue{0: 1}
		o.Policy = compliance{0: true, 1: true}
		o.AuditStats = collector.AuditStatsFunc(func() audit.SpoolStats {
			return audit.SpoolStats{PendingRecords: 1, Bytes: 512, OldestPending: t0}
		})
	}})
	e.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	e.seal(t, "ok-shard", 0, 9000)
	e.seal(t, "bad-shard", 1, 9000)
	if err := simgpu.Corrupt(context.Background(), e.sealer, "bad-shard", 1, 0); err != nil {
		t.Fatal(err)
	}
	_, _ = e.sealer.VerifyAll(context.Background())
	e.refresh(t)
	return e
}

func TestLint(t *testing.T) {
	e := fullEnv(t)
	problems, err := testutil.GatherAndLint(e.reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "vramseal_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

// TestPromtoolCheckMetrics runs the pinned promtool over a full scrape.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := testenv.Tool(t, "VRAMSEAL_PROMTOOL")
	body := scrape(t, fullEnv(t).reg)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
	// Be sure it looked at what we meant: a bad exposition must fail.
	cmd = exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader("# TYPE vramseal_bad_total counter\nvramseal_bad_total{a=\"1\"} x\n")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("promtool accepted a broken exposition: %s", out)
	}
}

type panickyPolicy struct{}

func (panickyPolicy) Compliant() map[int]bool { panic("policy bug") }

// TestPanickingSourceFailsOnlyItsCollector: a source's bug makes its
// collector's success 0; the scrape goes on.
func TestPanickingSourceFailsOnlyItsCollector(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.Policy = panickyPolicy{} }})
	e.seal(t, "p1", 0, 4096)
	body := scrape(t, e.reg)
	for _, l := range []string{`vramseal_collector_success{collector="policy"} 0`, `vramseal_collector_success{collector="seal"} 1`, `vramseal_sealed_shards{gpu="0"} 1`} {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("scrape lacks %q", l)
		}
	}
}
