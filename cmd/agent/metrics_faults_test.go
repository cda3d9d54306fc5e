package main

import (
	"slices"
	"testing"
)

// TestMetricsFollowFaults drives the simulated GPUs' fault switches through
// the built binary's `debug` commands and checks that /metrics shows each
// fault: a corrupted shard, ECC errors, a lost and restored GPU, and a
// released shard's series gone.
func TestMetricsFollowFaults(t *testing.T) {
	e := newEnv(t) // verify every second, so the schedule finds the corruption
	e.shardFile("a.bin", 600000, 1)
	e.shardFile("b.bin", 300000, 2)
	// c is sealed through the API, not declared: a declared shard that is
	// released is sealed again at once.
	cPath := e.shardFile("c.bin", 100000, 3)
	e.writeConfig("sim", "a:a.bin:0", "b:b.bin:1")
	e.start()
	e.waitFor("/readyz 200", func() bool { code, _ := e.get("/readyz"); return code == 200 })
	e.mustCLI(0, "seal", cPath, "--id", "c", "--gpu", "0", "--model-ref", "e2e/c@1")

	const (
		verified   = "vramseal_shard_verified"
		verifs     = "vramseal_verifications_total"
		ecc        = "vramseal_gpu_ecc_errors_total"
		gpuUp      = "vramseal_gpu_up"
		gpuInfo    = "vramseal_gpu_info"
		gpuTotal   = "vramseal_gpu_memory_total_bytes"
		mismatch   = "digest_mismatch"
		uncorected = "uncorrected"
	)
	s := e.waitScrape("both GPUs read", func(s scrape) bool {
		up0, _ := s.value(gpuUp, "gpu", "0")
		up1, _ := s.value(gpuUp, "gpu", "1")
		return up0 == 1 && up1 == 1
	})
	for _, id := range []string{"a", "b"} {
		if v, ok := s.value(verified, "shard_id", id); !ok || v != 1 {
			t.Fatalf("%s{shard_id=%q} = %g (present %v), want 1", verified, id, v, ok)
		}
	}
	if v, ok := s.value(verifs, "gpu", "0", "result", mismatch); !ok || v != 0 {
		t.Fatalf("%s{gpu=\"0\",result=%q} = %g (present %v), want 0 before any corruption", verifs, mismatch, v, ok)
	}

	// debug corrupt: the next scheduled verification finds it.
	e.mustCLI(0, "debug", "corrupt", "a", "--offset", "300000")
	s = e.waitScrape("a's scheduled verification to fail", func(s scrape) bool {
		v, _ := s.value(verified, "shard_id", "a")
		n, _ := s.value(verifs, "gpu", "0", "result", mismatch)
		return v == 0 && n >= 1
	})
	if v, _ := s.value(verified, "shard_id", "b"); v != 1 {
		t.Errorf("%s{shard_id=\"b\"} = %g after corrupting a, want 1", verified, v)
	}
	if n, _ := s.value(verifs, "gpu", "1", "result", mismatch); n != 0 {
		t.Errorf("%s{gpu=\"1\",result=%q} = %g, want 0 (only a, on GPU 0, was corrupted)", verifs, mismatch, n)
	}
	// ... and so does a verification the user asks for.
	before, _ := s.value(verifs, "gpu", "0", "result", mismatch)
	e.mustCLI(1, "verify", "a")
	s = e.scrape()
	if after, _ := s.value(verifs, "gpu", "0", "result", mismatch); after < before+1 {
		t.Errorf("`verify a` of the corrupted shard: %s{result=%q} went from %g to %g", verifs, mismatch, before, after)
	}
	if v, _ := s.value(verified, "shard_id", "a"); v != 0 {
		t.Errorf("%s{shard_id=\"a\"} = %g after a failed `verify a`, want 0", verified, v)
	}

	// debug ecc: the GPU's counters, by type.
	e.mustCLI(0, "debug", "ecc", "1", "--uncorrectable", "3")
	e.waitScrape("3 uncorrected ECC errors on GPU 1", func(s scrape) bool {
		n, _ := s.value(ecc, "gpu", "1", "type", uncorected)
		return n == 3
	})
	e.mustCLI(0, "debug", "ecc", "1", "--uncorrectable", "2", "--correctable", "7")
	s = e.waitScrape("5 uncorrected ECC errors on GPU 1", func(s scrape) bool {
		n, _ := s.value(ecc, "gpu", "1", "type", uncorected)
		return n == 5
	})
	for _, c := range []struct {
		gpu, typ string
		want     float64
	}{{"1", "corrected", 7}, {"0", uncorected, 0}, {"0", "corrected", 0}} {
		if n, ok := s.value(ecc, "gpu", c.gpu, "type", c.typ); !ok || n != c.want {
			t.Errorf("%s{gpu=%q,type=%q} = %g (present %v), want %g", ecc, c.gpu, c.typ, n, ok, c.want)
		}
	}

	// debug gpu-lost: vramseal_gpu_up 0, and the GPU's info and memory
	// series disappear (the alerts key on that); the other GPU stays.
	e.mustCLI(0, "debug", "gpu-lost", "1")
	// Its shard cannot be read back: a failed verification (result error).
	s = e.waitScrape("GPU 1 reported lost and b's verification failed", func(s scrape) bool {
		up, ok := s.value(gpuUp, "gpu", "1")
		b, _ := s.value(verified, "shard_id", "b")
		n, _ := s.value(verifs, "gpu", "1", "result", "error")
		return ok && up == 0 && b == 0 && n >= 1
	})
	for _, name := range []string{gpuInfo, gpuTotal, ecc} {
		if _, ok := s.value(name, "gpu", "1"); ok {
			t.Errorf("%s{gpu=\"1\"} still served for the lost GPU", name)
		}
		if _, ok := s.value(name, "gpu", "0"); !ok {
			t.Errorf("%s{gpu=\"0\"} gone with GPU 1", name)
		}
	}
	// Restored, it is back, empty as after a reset: b's allocation is gone.
	e.mustCLI(0, "debug", "gpu-restored", "1")
	s = e.waitScrape("GPU 1 back and b's allocation found missing", func(s scrape) bool {
		up, _ := s.value(gpuUp, "gpu", "1")
		_, info := s.value(gpuInfo, "gpu", "1", "name", "vramseal simulated GPU")
		_, total := s.value(gpuTotal, "gpu", "1")
		n, _ := s.value(verifs, "gpu", "1", "result", "allocation_missing")
		return up == 1 && info && total && n >= 1
	})

	// release: every series naming the shard goes; the others' stay.
	if got := s.with("shard_id", "c"); len(got) < 3 {
		t.Fatalf("before the release, c has series in %v only", got)
	}
	e.mustCLI(0, "release", "c")
	s = e.scrape()
	if got := s.with("shard_id", "c"); len(got) != 0 {
		slices.Sort(got)
		t.Errorf("after `release c`, these families still have a series for c: %v", got)
	}
	for _, id := range []string{"a", "b"} {
		if got := s.with("shard_id", id); !slices.Contains(got, "vramseal_shard_info") || !slices.Contains(got, verified) {
			t.Errorf("after `release c`, %s's series are %v", id, got)
		}
	}
	for name, want := range map[string]float64{"vramseal_sealed_shards": 1, "vramseal_sealed_bytes": 600000} {
		if v, ok := s.value(name, "gpu", "0"); !ok || v != want {
			t.Errorf("%s{gpu=\"0\"} = %g (present %v) after releasing c, want %g (a alone)", name, v, ok, want)
		}
	}
}
