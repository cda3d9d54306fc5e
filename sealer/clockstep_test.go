package sealer

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// step moves the wall clock by d, as an NTP step or an operator's date
// does: timers keep their remaining durations (the kernel's timers run on
// the monotonic clock), only Now jumps.
func (c *fakeClock) step(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	for t := range c.timers {
		t.at = t.at.Add(d)
	}
}

// TestScheduleThroughClockSteps: the wall clock jumps back 3 hours, then
// forward 6, then back 1; in every 2-minute phase each shard is verified
// at its interval, never stalled waiting for the wall clock to catch up
// and never in a catch-up storm (one immediate verification at most after
// a forward jump).
func TestScheduleThroughClockSteps(t *testing.T) {
	clock := newFakeClock()
	src := newFakeSource(clock, []int{0, 1})
	const shards = 8
	for i := range shards {
		src.add(fmt.Sprintf("shard-%d", i), i%2, 1<<20)
	}
	const interval = 10 * time.Second
	log, _ := quietLogger()
	rng := rand.New(rand.NewPCG(3, 4))
	_, stop := startSchedule(t, src, ScheduleConfig{Interval: interval, Jitter: 0.1, Clock: clock, Rand: rng.Float64, Logger: log})
	defer stop()
	const phase = 2 * time.Minute
	runFor(t, clock, 2, phase, nil)
	for _, jump := range []time.Duration{-3 * time.Hour, 6 * time.Hour, -time.Hour} {
		before := make([]int, shards)
		for i := range shards {
			before[i] = len(src.callTimes(fmt.Sprintf("shard-%d", i)))
		}
		clock.step(jump)
		runFor(t, clock, 2, phase, nil)
		for i := range shards {
			n := len(src.callTimes(fmt.Sprintf("shard-%d", i))) - before[i]
			// 120 s at 9–11 s: 10 to 13, and one more after a forward jump.
			if n < 10 || n > 14 {
				t.Errorf("after a clock step of %s: shard-%d verified %d times in %s, want 10 to 14 (every %s)", jump, i, n, phase, interval)
			}
		}
	}
	if len(src.overlap) > 0 {
		t.Errorf("overlapping verifications of %v", src.overlap)
	}
}
