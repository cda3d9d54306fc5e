package collector_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

func TestSealLifecycleSeries(t *testing.T) {
	e := newEnv(t, envOpts{})
	a := e.seal(t, "shard-a", 0, 10000)
	b := e.seal(t, "shard-b", 1, 5000)
	ts := fmt.Sprintf("%g", float64(t0.Unix()))

	want := fmt.Sprintf(`
# HELP vramseal_sealed_bytes Bytes of VRAM held by the shards sealed on the GPU.
# TYPE vramseal_sealed_bytes gauge
vramseal_sealed_bytes{gpu="0"} 10000
vramseal_sealed_bytes{gpu="1"} 5000
# HELP vramseal_sealed_shards Shards sealed on the GPU.
# TYPE vramseal_sealed_shards gauge
vramseal_sealed_shards{gpu="0"} 1
vramseal_sealed_shards{gpu="1"} 1
# HELP vramseal_shard_info A sealed shard, always 1, with its seal digest, model reference and origin (sealed: loaded by the agent; attached: an engine's own memory, sealed in place).
# TYPE vramseal_shard_info gauge
vramseal_shard_info{digest=%q,gpu="0",model_ref="demo/shard-a",origin="sealed",shard_id="shard-a"} 1
vramseal_shard_info{digest=%q,gpu="1",model_ref="demo/shard-b",origin="sealed",shard_id="shard-b"} 1
# HELP vramseal_shard_last_verified_timestamp_seconds When the shard was last verified intact (its seal time until its first successful verification).
# TYPE vramseal_shard_last_verified_timestamp_seconds gauge
vramseal_shard_last_verified_timestamp_seconds{gpu="0",shard_id="shard-a"} %[3]s
vramseal_shard_last_verified_timestamp_seconds{gpu="1",shard_id="shard-b"} %[3]s
# HELP vramseal_shard_verified Whether the shard was intact at its last verification (1; also before the first, as sealed) or not (0: altered, allocation missing, seal invalid or unreadable).
# TYPE vramseal_shard_verified gauge
vramseal_shard_verified{gpu="0",shard_id="shard-a"} 1
vramseal_shard_verified{gpu="1",shard_id="shard-b"} 1
# HELP vramseal_seals_total Seal attempts, by GPU and result (ok, content_digest_mismatch, insufficient_vram, error).
# TYPE vramseal_seals_total counter
vramseal_seals_total{gpu="0",result="content_digest_mismatch"} 0
vramseal_seals_total{gpu="0",result="error"} 0
vramseal_seals_total{gpu="0",result="insufficient_vram"} 0
vramseal_seals_total{gpu="0",result="ok"} 1
vramseal_seals_total{gpu="1",result="content_digest_mismatch"} 0
vramseal_seals_total{gpu="1",result="error"} 0
vramseal_seals_total{gpu="1",result="insufficient_vram"} 0
vramseal_seals_total{gpu="1",result="ok"} 1
`, a.Digest, b.Digest, ts)
	names := []string{"vramseal_sealed_bytes", "vramseal_sealed_shards", "vramseal_shard_info",
		"vramseal_shard_last_verified_timestamp_seconds", "vramseal_shard_verified", "vramseal_seals_total"}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	// Corrupt shard-a: the next verification flips it to 0 and counts a
	// digest mismatch; shard-b stays intact.
	if err := simgpu.Corrupt(context.Background(), e.sealer, "shard-a", 4097, 3); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sealer.Verify(context.Background(), "shard-a"); sealer.KindOf(err) != sealer.KindIntegrity {
		t.Fatalf("Verify of a corrupted shard: %v", err)
	}
	if _, err := e.sealer.Verify(context.Background(), "shard-b"); err != nil {
		t.Fatal(err)
	}
	want = `
# HELP vramseal_shard_verified Whether the shard was intact at its last verification (1; also before the first, as sealed) or not (0: altered, allocation missing, seal invalid or unreadable).
# TYPE vramseal_shard_verified gauge
vramseal_shard_verified{gpu="0",shard_id="shard-a"} 0
vramseal_shard_verified{gpu="1",shard_id="shard-b"} 1
# HELP vramseal_verifications_total Verifications of sealed shards, by GPU and result (ok, digest_mismatch, signature_invalid, allocation_missing, error). Cancelled ones are not counted.
# TYPE vramseal_verifications_total counter
vramseal_verifications_total{gpu="0",result="allocation_missing"} 0
vramseal_verifications_total{gpu="0",result="digest_mismatch"} 1
vramseal_verifications_total{gpu="0",result="error"} 0
vramseal_verifications_total{gpu="0",result="ok"} 0
vramseal_verifications_total{gpu="0",result="signature_invalid"} 0
vramseal_verifications_total{gpu="1",result="allocation_missing"} 0
vramseal_verifications_total{gpu="1",result="digest_mismatch"} 0
vramseal_verifications_total{gpu="1",result="error"} 0
vramseal_verifications_total{gpu="1",result="ok"} 1
vramseal_verifications_total{gpu="1",result="signature_invalid"} 0
# HELP vramseal_verified_bytes_total Bytes of VRAM verified intact, by GPU.
# TYPE vramseal_verified_bytes_total counter
vramseal_verified_bytes_total{gpu="0"} 0
vramseal_verified_bytes_total{gpu="1"} 5000
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want),
		"vramseal_shard_verified", "vramseal_verifications_total", "vramseal_verified_bytes_total"); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, e.reg)
	for _, l := range []string{`vramseal_verification_duration_seconds_count{gpu="0"} 1`, `vramseal_verification_duration_seconds_count{gpu="1"} 1`} {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("scrape lacks %q", l)
		}
	}

	// The GPU memory reflects the sealed shards.
	e.refresh(t)
	if got := lines(scrape(t, e.reg), `vramseal_gpu_memory_used_bytes{gpu="0"`); len(got) != 1 || !strings.HasSuffix(got[0], " 10000") {
		t.Errorf("GPU 0 used bytes: %q, want 10000", got)
	}

	// Releasing shard-b removes its series and zeroes GPU 1.
	if _, err := e.sealer.Release(context.Background(), "shard-b"); err != nil {
		t.Fatal(err)
	}
	body = scrape(t, e.reg)
	if got := lines(body, "vramseal_shard"); len(got) == 0 || strings.Contains(strings.Join(got, "\n"), "shard-b") {
		t.Errorf("after release, shard series: %q", got)
	}
	for _, l := range []string{`vramseal_sealed_shards{gpu="1"} 0`, `vramseal_sealed_bytes{gpu="1"} 0`, `vramseal_shard_verified{gpu="0",shard_id="shard-a"} 0`} {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("after release, scrape lacks %q", l)
		}
	}
}

func TestShardLastVerifiedMovesOnlyOnSuccess(t *testing.T) {
	e := newEnv(t, envOpts{gpus: 1})
	e.seal(t, "s1", 0, 8192)
	if _, err := e.sealer.Verify(context.Background(), "s1"); err != nil {
		t.Fatal(err)
	}
	got := lines(scrape(t, e.reg), "vramseal_shard_last_verified_timestamp_seconds{")
	if len(got) != 1 || !strings.HasSuffix(got[0], fmt.Sprintf(" %g", float64(t0.Unix()))) {
		t.Fatalf("last verified: %q", got)
	}
}

func TestScheduleAndInterval(t *testing.T) {
	e := newEnv(t, envOpts{mutate: func(o *collector.Options) { o.Schedule = overdue{1: 3} }})
	body := scrape(t, e.reg)
	for _, l := range []string{
		`vramseal_verification_overdue_shards{gpu="0"} 0`,
		`vramseal_verification_overdue_shards{gpu="1"} 3`,
		`vramseal_verify_interval_seconds 300`,
	} {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("scrape lacks %q", l)
		}
	}
	// Without a schedule the overdue gauge is absent.
	e2 := newEnv(t, envOpts{})
	if got := lines(scrape(t, e2.reg), "vramseal_verification_overdue_shards{"); len(got) != 0 {
		t.Errorf("overdue without schedule: %q", got)
	}
}

type overdue map[int]int

func (o overdue) OverdueShards() map[int]int { return o }

func TestObserverFailureResults(t *testing.T) {
	e := newEnv(t, envOpts{gpus: 1})
	// No room: insufficient_vram on both the allocation and the seal.
	e.seal(t, "fits", 0, 4096)
	e.devs[0].FailNextAlloc(fmt.Errorf("injected: %w", sealer.ErrOutOfMemory))
	p := e.dir + "/fits"
	if _, err := e.sealer.Seal(context.Background(), sealer.SealRequest{ID: "nofit", Path: p, GPU: 0}); err == nil {
		t.Fatal("seal with a failing allocation succeeded")
	}
	// A read error counts as result="error".
	e.devs[0].SetFailReads(true)
	if _, err := e.sealer.Verify(context.Background(), "fits"); err == nil {
		t.Fatal("verify with failing reads succeeded")
	}
	e.devs[0].SetFailReads(false)
	// An outcome for a GPU the agent does not have is counted as gpu="unknown".
	e.obs.VerificationDone(42, "signature_invalid", time.Millisecond, 0)
	e.obs.SealDone(0, "something_new")

	body := scrape(t, e.reg)
	for _, l := range []string{
		`vramseal_allocations_total{gpu="0",result="insufficient_vram"} 1`,
		`vramseal_allocations_total{gpu="0",result="ok"} 1`,
		`vramseal_seals_total{gpu="0",result="insufficient_vram"} 1`,
		`vramseal_seals_total{gpu="0",result="error"} 1`,
		`vramseal_verifications_total{gpu="0",result="error"} 1`,
		`vramseal_verifications_total{gpu="unknown",result="signature_invalid"} 1`,
		`vramseal_shard_verified{gpu="0",shard_id="fits"} 0`,
	} {
		if !strings.Contains(body, l+"\n") {
			t.Errorf("scrape lacks %q", l)
		}
	}
	// A later successful verification makes it 1 again (a read error is not sticky).
	if _, err := e.sealer.Verify(context.Background(), "fits"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(scrape(t, e.reg), `vramseal_shard_verified{gpu="0",shard_id="fits"} 1`+"\n") {
		t.Error("shard not verified after a successful verification")
	}
}
