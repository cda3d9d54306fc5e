package config

import (
	"math"

	"github.com/vramseal/vramseal/sealer"
)

// RateLimit is a per-caller rate limit of the control API, applied to each
// calling uid (control.rate_limit). RequestsPerSecond 0 turns it off.
type RateLimit struct {
	// RequestsPerSecond is the sustained rate each uid may call at.
	RequestsPerSecond float64 `yaml:"requests_per_second"`
	// Burst is how many calls a uid may make at once above the rate (0:
	// RequestsPerSecond rounded up, at least 1).
	Burst int `yaml:"burst"`
}

// Limits on the memory keys.
const (
	minMemoryLimit  = 16 << 20
	maxInFlightGPU  = 64
	maxBufferBudget = 1 << 36 // 64 GiB
)

// validateLimits checks memory_limit_bytes, the verification bounds and
// control.rate_limit, and fills in the burst.
func (c *Config) validateLimits() error {
	if c.MemoryLimitBytes != 0 && c.MemoryLimitBytes < minMemoryLimit {
		return c.errorf("memory_limit_bytes", "%d: want 0 (the agent's default) or at least %d (16 MiB)", c.MemoryLimitBytes, minMemoryLimit)
	}
	if c.MemoryLimitBytes > math.MaxInt64 {
		return c.errorf("memory_limit_bytes", "%d: too large", c.MemoryLimitBytes)
	}
	if n := c.Verify.MaxInFlightPerGPU; n < 1 || n > maxInFlightGPU {
		return c.errorf("verify.max_in_flight_per_gpu", "%d: want 1 to %d", n, maxInFlightGPU)
	}
	if b := c.Verify.BufferBudgetBytes; b < sealer.BufferSize || b > maxBufferBudget {
		return c.errorf("verify.buffer_budget_bytes", "%d: want %d (one 4 MiB buffer) to %d", b, sealer.BufferSize, uint64(maxBufferBudget))
	}
	rl := &c.Control.RateLimit
	if rl.RequestsPerSecond < 0 || math.IsNaN(rl.RequestsPerSecond) || math.IsInf(rl.RequestsPerSecond, 0) || rl.RequestsPerSecond > 1e6 {
		return c.errorf("control.rate_limit.requests_per_second", "%g: want 0 (off) to 1000000", rl.RequestsPerSecond)
	}
	if rl.Burst < 0 || rl.Burst > 1e6 {
		return c.errorf("control.rate_limit.burst", "%d: want 0 to 1000000", rl.Burst)
	}
	if rl.RequestsPerSecond > 0 && rl.Burst == 0 {
		rl.Burst = max(1, int(math.Ceil(rl.RequestsPerSecond)))
	}
	return nil
}
