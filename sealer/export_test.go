package sealer

import (
	"testing"
	"time"
)

// Test-only exports for the external test package.
type FakeClock = fakeClock

var NewFakeClock = newFakeClock

func (c *fakeClock) BlockUntil(t testing.TB, n int) { c.blockUntil(t, n) }
func (c *fakeClock) Advance(d time.Duration)        { c.advance(d) }
