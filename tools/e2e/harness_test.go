package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// staticTarget serves a fixed exposition with every metric of the design
// (two GPUs, two shards), standing in for the agent so that the harness, the
// dashboard queries and the rules are proven on a real Prometheus before the
// agent's collectors exist. Counters advance on every scrape, as a working
// agent's would.
type staticTarget struct {
	mu       sync.Mutex
	scrapes  int
	failed   map[string]bool // shard id → last verification failed
	started  time.Time
	shardGPU map[string]string
}

func newStaticTarget() *staticTarget {
	return &staticTarget{failed: map[string]bool{}, started: time.Now(), shardGPU: map[string]string{"shard-a": "0", "shard-b": "1"}}
}

func (s *staticTarget) setFailed(shard string, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failed[shard] = failed
}

func (s *staticTarget) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scrapes++
	n := s.scrapes
	now := float64(time.Now().UnixMilli()) / 1000
	var b strings.Builder
	family := func(name, typ string) { fmt.Fprintf(&b, "# HELP %s fixture\n# TYPE %s %s\n", name, name, typ) }
	family("vramseal_build_info", "gauge")
	fmt.Fprintln(&b, `vramseal_build_info{version="fixture",revision="0",goversion="go1.26.8"} 1`)
	family("vramseal_agent_info", "gauge")
	fmt.Fprintln(&b, `vramseal_agent_info{worker_id="fixture-node",device="sim"} 1`)
	for _, m := range []string{"vramseal_gpu_info", "vramseal_gpu_memory_total_bytes", "vramseal_gpu_memory_used_bytes", "vramseal_gpu_memory_free_bytes"} {
		typ := "gauge"
		family(m, typ)
		for _, g := range []string{"0", "1"} {
			switch m {
			case "vramseal_gpu_info":
				fmt.Fprintf(&b, "%s{gpu=%q,uuid=\"GPU-%s\",name=\"vramseal simulated GPU\",driver_version=\"simulated\",pci_bus_id=\"\"} 1\n", m, g, g)
			case "vramseal_gpu_memory_total_bytes":
				fmt.Fprintf(&b, "%s{gpu=%q,uuid=\"GPU-%s\"} 8589934592\n", m, g, g)
			case "vramseal_gpu_memory_used_bytes":
				fmt.Fprintf(&b, "%s{gpu=%q,uuid=\"GPU-%s\"} 1048576\n", m, g, g)
			default:
				fmt.Fprintf(&b, "%s{gpu=%q,uuid=\"GPU-%s\"} 8588886016\n", m, g, g)
			}
		}
	}
	family("vramseal_gpu_up", "gauge")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_gpu_up{gpu=%q,uuid=\"GPU-%s\"} 1\n", g, g)
	}
	family("vramseal_gpu_processes", "gauge")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_gpu_processes{gpu=%q,uuid=\"GPU-%s\",class=\"agent\"} 1\n", g, g)
		fmt.Fprintf(&b, "vramseal_gpu_processes{gpu=%q,uuid=\"GPU-%s\",class=\"foreign\"} 0\n", g, g)
	}
	family("vramseal_gpu_process_memory_bytes", "gauge")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_gpu_process_memory_bytes{gpu=%q,uuid=\"GPU-%s\",class=\"agent\"} 1048576\n", g, g)
		fmt.Fprintf(&b, "vramseal_gpu_process_memory_bytes{gpu=%q,uuid=\"GPU-%s\",class=\"foreign\"} 0\n", g, g)
	}
	family("vramseal_gpu_ecc_errors_total", "counter")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_gpu_ecc_errors_total{gpu=%q,uuid=\"GPU-%s\",type=\"corrected\"} %d\n", g, g, n)
		fmt.Fprintf(&b, "vramseal_gpu_ecc_errors_total{gpu=%q,uuid=\"GPU-%s\",type=\"uncorrected\"} 0\n", g, g)
	}
	for _, m := range []string{"vramseal_sealed_shards", "vramseal_sealed_bytes", "vramseal_verification_overdue_shards", "vramseal_verified_bytes_total"} {
		typ := "gauge"
		if strings.HasSuffix(m, "_total") {
			typ = "counter"
		}
		family(m, typ)
		for _, g := range []string{"0", "1"} {
			v := map[string]int{"vramseal_sealed_shards": 1, "vramseal_sealed_bytes": 1048576, "vramseal_verification_overdue_shards": 0, "vramseal_verified_bytes_total": 1048576 * n}[m]
			fmt.Fprintf(&b, "%s{gpu=%q} %d\n", m, g, v)
		}
	}
	family("vramseal_shard_info", "gauge")
	for id, g := range s.shardGPU {
		fmt.Fprintf(&b, "vramseal_shard_info{shard_id=%q,gpu=%q,digest=\"sha256-tree-v1:%064d\",model_ref=\"fixture\",origin=\"sealed\"} 1\n", id, g, 0)
	}
	family("vramseal_shard_verified", "gauge")
	for id, g := range s.shardGPU {
		v := 1
		if s.failed[id] {
			v = 0
		}
		fmt.Fprintf(&b, "vramseal_shard_verified{shard_id=%q,gpu=%q} %d\n", id, g, v)
	}
	family("vramseal_shard_last_verified_timestamp_seconds", "gauge")
	for id, g := range s.shardGPU {
		fmt.Fprintf(&b, "vramseal_shard_last_verified_timestamp_seconds{shard_id=%q,gpu=%q} %.3f\n", id, g, now)
	}
	family("vramseal_verify_interval_seconds", "gauge")
	fmt.Fprintln(&b, "vramseal_verify_interval_seconds 2")
	family("vramseal_seals_total", "counter")
	family("vramseal_allocations_total", "counter")
	family("vramseal_verifications_total", "counter")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_seals_total{gpu=%q,result=\"ok\"} 1\n", g)
		fmt.Fprintf(&b, "vramseal_allocations_total{gpu=%q,result=\"ok\"} 1\n", g)
		fmt.Fprintf(&b, "vramseal_verifications_total{gpu=%q,result=\"ok\"} %d\n", g, n)
		fmt.Fprintf(&b, "vramseal_verifications_total{gpu=%q,result=\"digest_mismatch\"} 0\n", g)
	}
	family("vramseal_verification_duration_seconds", "histogram")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_verification_duration_seconds_bucket{gpu=%q,le=\"0.01\"} %d\n", g, n/2)
		fmt.Fprintf(&b, "vramseal_verification_duration_seconds_bucket{gpu=%q,le=\"+Inf\"} %d\n", g, n)
		fmt.Fprintf(&b, "vramseal_verification_duration_seconds_sum{gpu=%q} %.3f\n", g, 0.01*float64(n))
		fmt.Fprintf(&b, "vramseal_verification_duration_seconds_count{gpu=%q} %d\n", g, n)
	}
	family("vramseal_policy_compliant", "gauge")
	for _, g := range []string{"0", "1"} {
		fmt.Fprintf(&b, "vramseal_policy_compliant{policy=\"vram_only\",gpu=%q} 1\n", g)
	}
	family("vramseal_audit_events_total", "counter")
	fmt.Fprintf(&b, "vramseal_audit_events_total{event=\"seal.verified\"} %d\n", n)
	family("vramseal_audit_emit_failures_total", "counter")
	fmt.Fprintln(&b, `vramseal_audit_emit_failures_total{event="seal.verified"} 0`)
	family("vramseal_audit_events_lost_total", "counter")
	for _, r := range []string{"queue_full", "disk_full", "write_error"} {
		fmt.Fprintf(&b, "vramseal_audit_events_lost_total{reason=%q} 0\n", r)
	}
	for m, v := range map[string]string{
		"vramseal_audit_spool_pending_records":                  "3",
		"vramseal_audit_spool_bytes":                            "4096",
		"vramseal_audit_spool_oldest_pending_timestamp_seconds": fmt.Sprintf("%.3f", now-1),
		"vramseal_audit_spool_quarantined_files":                "0",
	} {
		family(m, "gauge")
		fmt.Fprintf(&b, "%s %s\n", m, v)
	}
	family("vramseal_audit_export_failures_total", "counter")
	fmt.Fprintln(&b, "vramseal_audit_export_failures_total 0")
	family("vramseal_collector_success", "gauge")
	family("vramseal_collector_duration_seconds", "gauge")
	for _, c := range []string{"info", "gpu", "seal", "audit", "policy"} {
		fmt.Fprintf(&b, "vramseal_collector_success{collector=%q} 1\n", c)
		fmt.Fprintf(&b, "vramseal_collector_duration_seconds{collector=%q} 0.001\n", c)
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	_, _ = w.Write([]byte(b.String()))
}

// TestStaticTargetServesTheDesign keeps the fixture honest: it must expose
// every family the design promises, as the agent must.
func TestStaticTargetServesTheDesign(t *testing.T) {
	rec := httptest.NewRecorder()
	newStaticTarget().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	missing, err := missingFamilies(rec.Body, DesignMetrics)
	if err != nil || len(missing) > 0 {
		t.Fatalf("fixture lacks %v (%v)", missing, err)
	}
}

// TestHarnessAgainstStaticTarget proves the harness on a real Prometheus:
// the rules load and stay silent on healthy data, the seal-failure alert
// fires within two evaluation cycles of the failure being scraped and
// resolves after recovery, and every dashboard query returns data.
func TestHarnessAgainstStaticTarget(t *testing.T) {
	bin := prometheusBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	target := newStaticTarget()
	srv := httptest.NewServer(target)
	defer srv.Close()
	prom := StartPrometheus(ctx, t, PrometheusConfig{
		Binary:    bin,
		Job:       "vramseal",
		Targets:   []string{strings.TrimPrefix(srv.URL, "http://")},
		RuleFiles: []string{rulesPath(t)},
		Interval:  interval,
	})
	empty, _ := checkAlertCycle(ctx, t, prom, func(shard string) { target.setFailed(shard, true) }, nil)
	if len(empty) > 0 {
		t.Errorf("panels without data: %v", empty)
	}
}

// checkAlertCycle is the scenario both the static target and the agent
// run: healthy and silent → shard-a fails → alert within two evaluation
// cycles, and every dashboard panel has data, except those listed in
// mayBeEmpty ("uid/title" → reason), which it returns when they were empty,
// with the time the alert was first seen firing.
func checkAlertCycle(ctx context.Context, t *testing.T, prom *Prometheus, fail func(shard string), mayBeEmpty map[string]string) (map[string]string, time.Time) {
	t.Helper()
	waitForRates(ctx, t, prom)
	alerts, err := prom.Alerts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		if a.State == "firing" {
			t.Errorf("alert firing on healthy data: %v", a.Labels)
		} else {
			t.Logf("alert %s on healthy data (start-up): %v", a.State, a.Labels)
		}
	}

	fail("shard-a")
	seen, err := WaitFor(ctx, 30*time.Second, "shard-a verified == 0 in Prometheus", func() (bool, error) {
		s, err := prom.Query(ctx, `vramseal_shard_verified{job="vramseal", shard_id="shard-a"} == 0`)
		return len(s) > 0, err
	})
	if err != nil {
		t.Fatal(err)
	}
	match := map[string]string{"shard_id": "shard-a", "gpu": "0", "severity": "critical", "job": "vramseal"}
	var alert Alert
	firing, err := WaitFor(ctx, 10*prom.Interval, "VramsealSealVerificationFailed firing", func() (bool, error) {
		a, ok, err := prom.FiringAlert(ctx, "VramsealSealVerificationFailed", match)
		alert = a
		return ok, err
	})
	if err != nil {
		t.Fatalf("%v\n%s", err, prom.Log())
	}
	// Two evaluation cycles, plus the polling granularity (50ms) and the
	// time the polling queries themselves take.
	if d := firing.Sub(seen); d > 2*prom.Interval+250*time.Millisecond {
		t.Errorf("alert firing %s after the failure was scraped, want within two evaluation cycles (%s)", d, 2*prom.Interval)
	} else {
		t.Logf("seal failure scraped → alert firing in %s (evaluation interval %s)", d.Round(time.Millisecond), prom.Interval)
	}
	for _, k := range []string{"summary", "description", "runbook_url"} {
		if alert.Annotations[k] == "" {
			t.Errorf("firing alert lacks annotation %s: %v", k, alert.Annotations)
		}
	}
	if !strings.Contains(alert.Annotations["summary"], "shard-a") {
		t.Errorf("summary does not name the shard: %q", alert.Annotations["summary"])
	}

	return checkDashboards(ctx, t, prom, map[string]string{"gpu": "0", "shard_id": "shard-a"}, mayBeEmpty), firing
}

// waitForRates waits until the target is scraped often enough for rate()
// over $__rate_interval (10 scrape intervals here) to have data.
func waitForRates(ctx context.Context, t *testing.T, prom *Prometheus) {
	t.Helper()
	if _, err := WaitFor(ctx, 60*time.Second, "target up and rates computable", func() (bool, error) {
		s, err := prom.Query(ctx, `rate(vramseal_verifications_total{job="vramseal"}[10s]) > 0`)
		return len(s) > 0, err
	}); err != nil {
		t.Fatalf("%v\n%s", err, prom.Log())
	}
	// A full rate window of samples (10 intervals) for every counter.
	time.Sleep(10 * prom.Interval)
}

// checkDashboards runs every panel query twice (the preferred variable
// values, then "All") and reports failed queries and panels without data
// that mayBeEmpty does not allow; it returns the allowed ones that were empty.
func checkDashboards(ctx context.Context, t *testing.T, prom *Prometheus, prefer, mayBeEmpty map[string]string) map[string]string {
	t.Helper()
	empty := map[string]string{}
	for _, sel := range []Selection{{Prefer: prefer}, {All: true}} {
		results, err := RunDashboards(ctx, prom, models(t), sel, 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range CheckPanels(results, mayBeEmpty) {
			t.Errorf("selection %+v: %s", sel, p)
		}
		for _, r := range results {
			if r.Err == nil && r.Series == 0 {
				if _, known := empty[r.Key()]; !known {
					t.Logf("selection %+v: %s has no data, allowed: %s", sel, r.Key(), mayBeEmpty[r.Key()])
				}
				empty[r.Key()] = mayBeEmpty[r.Key()]
			}
		}
		t.Logf("selection %+v: %d panel queries run", sel, len(results))
	}
	return empty
}

func TestHarnessRecovery(t *testing.T) {
	bin := prometheusBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	target := newStaticTarget()
	target.setFailed("shard-b", true)
	srv := httptest.NewServer(target)
	defer srv.Close()
	prom := StartPrometheus(ctx, t, PrometheusConfig{Binary: bin, Job: "vramseal",
		Targets: []string{strings.TrimPrefix(srv.URL, "http://")}, RuleFiles: []string{rulesPath(t)}, Interval: interval})
	match := map[string]string{"shard_id": "shard-b"}
	if _, err := WaitFor(ctx, 30*time.Second, "shard-b alert firing", func() (bool, error) {
		_, ok, err := prom.FiringAlert(ctx, "VramsealSealVerificationFailed", match)
		return ok, err
	}); err != nil {
		t.Fatalf("%v\n%s", err, prom.Log())
	}
	target.setFailed("shard-b", false)
	if _, err := WaitFor(ctx, 10*prom.Interval, "shard-b alert resolved", func() (bool, error) {
		_, ok, err := prom.FiringAlert(ctx, "VramsealSealVerificationFailed", match)
		return !ok, err
	}); err != nil {
		t.Fatal(err)
	}
}
