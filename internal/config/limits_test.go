package config

import (
	"strings"
	"testing"

	"github.com/vramseal/vramseal/sealer"
)

const limitsBase = "seal_secret_file: /k\n"

func TestLimitsDefaults(t *testing.T) {
	c, err := Parse("", []byte(limitsBase), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryLimitBytes != 0 || c.Verify.MaxInFlightPerGPU != sealer.DefaultMaxVerifyInFlightPerGPU ||
		c.Verify.BufferBudgetBytes != sealer.DefaultBufferBudget || c.Control.RateLimit != (RateLimit{}) {
		t.Fatalf("defaults: memory %d verify %+v control %+v", c.MemoryLimitBytes, c.Verify, c.Control)
	}
}

func TestLimitsParsed(t *testing.T) {
	c, err := Parse("", []byte(limitsBase+`memory_limit_bytes: 268435456
verify: {max_in_flight_per_gpu: 4, buffer_budget_bytes: 67108864}
control: {allowed_uids: [65534], rate_limit: {requests_per_second: 2.5}}
`), testEnv)
	if err != nil {
		t.Fatal(err)
	}
	if c.MemoryLimitBytes != 256<<20 || c.Verify.MaxInFlightPerGPU != 4 || c.Verify.BufferBudgetBytes != 64<<20 {
		t.Fatalf("memory %d verify %+v", c.MemoryLimitBytes, c.Verify)
	}
	if c.Control.RateLimit != (RateLimit{RequestsPerSecond: 2.5, Burst: 3}) {
		t.Fatalf("rate limit %+v, want 2.5/s with the burst rounded up to 3", c.Control.RateLimit)
	}
}

func TestLimitsRejected(t *testing.T) {
	for _, tc := range []struct{ yaml, key string }{
		{"memory_limit_bytes: 1000", "memory_limit_bytes"},
		{"verify: {max_in_flight_per_gpu: 0}", "verify.max_in_flight_per_gpu"},
		{"verify: {max_in_flight_per_gpu: 65}", "verify.max_in_flight_per_gpu"},
		{"verify: {buffer_budget_bytes: 4096}", "verify.buffer_budget_bytes"},
		{"control: {rate_limit: {requests_per_second: -1}}", "control.rate_limit.requests_per_second"},
		{"control: {rate_limit: {requests_per_second: .nan}}", "control.rate_limit.requests_per_second"},
		{"control: {rate_limit: {burst: -2}}", "control.rate_limit.burst"},
		{"control: {rate_limit: {rps: 3}}", "control.rate_limit.rps"},
	} {
		_, err := Parse("", []byte(limitsBase+tc.yaml+"\n"), testEnv)
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: error %v, want one naming %s", tc.yaml, err, tc.key)
		}
	}
}
