package sealer

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// ScheduleSource is what the schedule verifies: the Sealer implements it.
type ScheduleSource interface {
	// GPUs returns the device indexes.
	GPUs() []int
	// List returns every sealed shard.
	List() []ShardStatus
	// Verify verifies one shard now.
	Verify(ctx context.Context, id string) (VerifyResult, error)
}

var _ ScheduleSource = (*Sealer)(nil)

// ScheduleConfig configures a Schedule.
type ScheduleConfig struct {
	// Interval is the time between two verifications of a shard (required).
	Interval time.Duration
	// Jitter spreads each interval uniformly over Interval × (1 ± Jitter),
	// 0 ≤ Jitter < 1, so shards sealed together are not verified together.
	Jitter float64
	// MaxBytesPerSecond is the verification budget across all shards of the
	// agent (0: none). Scheduled verifications are paced (WithPacer): each
	// chunk of n bytes is read no earlier than n/MaxBytesPerSecond after the
	// budget's previous use ends, so the agent reads at most about that many
	// bytes per second, as a steady stream.
	MaxBytesPerSecond uint64
	// Resync bounds how long the schedule goes without looking for new or
	// released shards when nobody calls Notify (10s when 0).
	Resync time.Duration
	// Clock is the time source (RealClock when nil).
	Clock Clock
	// Rand returns a uniform number in [0, 1) (math/rand/v2 when nil).
	Rand func() float64
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
}

// Schedule re-verifies every sealed shard each interval, with jitter, one
// verification at a time per GPU (so never two of one shard at once), under
// one byte budget shared by all GPUs. A shard whose verification has not
// started by a tenth of an interval after its due time is overdue: it is
// logged once per episode and counted by OverdueShards.
//
// Shards are found by listing the source: Notify after a seal or release
// makes the schedule look at once. All methods are safe for concurrent use.
type Schedule struct {
	src   ScheduleSource
	cfg   ScheduleConfig
	clock Clock
	log   logrus.FieldLogger

	mu      sync.Mutex
	entries map[string]*scheduled
	budget  *rate.Limiter // the byte budget (nil: none)
	wake    map[int]chan struct{}
}

type scheduled struct {
	gpu      int
	bytes    uint64
	sealedAt time.Time // tells a shard re-sealed under the same id from the old one
	due      time.Time
	running  bool
	started  time.Time // when the verification in flight started
	overdue  bool      // logged as overdue in the current episode
}

// NewSchedule returns a Schedule over src.
func NewSchedule(src ScheduleSource, cfg ScheduleConfig) (*Schedule, error) {
	if cfg.Interval <= 0 {
		return nil, errors.New("schedule: interval must be positive")
	}
	if cfg.Jitter < 0 || cfg.Jitter >= 1 {
		return nil, errors.New("schedule: jitter must be in [0, 1)")
	}
	if cfg.Resync <= 0 {
		cfg.Resync = 10 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	s := &Schedule{src: src, cfg: cfg, clock: cfg.Clock, log: cfg.Logger,
		entries: map[string]*scheduled{}, wake: map[int]chan struct{}{}}
	if cfg.MaxBytesPerSecond > 0 {
		// A burst of one read buffer: a chunk is never split, and no more
		// than one chunk ever goes ahead of the rate.
		s.budget = rate.NewLimiter(rate.Limit(cfg.MaxBytesPerSecond), BufferSize)
	}
	for _, g := range src.GPUs() {
		s.wake[g] = make(chan struct{}, 1)
	}
	return s, nil
}

// Interval returns the configured interval.
func (s *Schedule) Interval() time.Duration { return s.cfg.Interval }

// jittered returns one interval with jitter applied.
func (s *Schedule) jittered() time.Duration {
	f := 1 + s.cfg.Jitter*(2*s.cfg.Rand()-1)
	return time.Duration(float64(s.cfg.Interval) * f)
}

// grace is how late a verification may start before its shard is overdue.
func (s *Schedule) grace() time.Duration { return s.cfg.Interval / 10 }

// Notify makes the schedule look for new and released shards now.
func (s *Schedule) Notify() {
	for _, ch := range s.wake {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// NextDue returns when the shard is next due for verification.
func (s *Schedule) NextDue(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return time.Time{}, false
	}
	return e.due, true
}

// OverdueShards returns, per GPU, how many shards are overdue now (every
// GPU is present, with 0 when none is).
func (s *Schedule) OverdueShards() map[int]int {
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int, len(s.wake))
	for g := range s.wake {
		out[g] = 0
	}
	for _, e := range s.entries {
		if !e.running && now.Sub(e.due) > s.grace() {
			out[e.gpu]++
		}
	}
	return out
}

// sync brings the entries in line with the source's shards.
func (s *Schedule) sync() {
	shards := s.src.List()
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	live := make(map[string]bool, len(shards))
	for _, st := range shards {
		id := st.Seal.ShardID
		live[id] = true
		if e, ok := s.entries[id]; ok && (e.running || e.sealedAt.Equal(st.Seal.SealedAt)) {
			continue
		}
		base := st.Seal.SealedAt
		if base.IsZero() || base.After(now) {
			base = now
		}
		s.entries[id] = &scheduled{gpu: st.Seal.GPUDevice, bytes: st.Seal.VRAMBytes, sealedAt: st.Seal.SealedAt, due: base.Add(s.jittered())}
	}
	for id, e := range s.entries {
		if !live[id] && !e.running {
			delete(s.entries, id)
		}
	}
}

// Run verifies shards until ctx ends; a verification in flight is then
// cancelled. It returns nil after ctx ends.
func (s *Schedule) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	for g := range s.wake {
		wg.Go(func() { s.runGPU(ctx, g) })
	}
	wg.Wait()
	return nil
}

// next picks the GPU's shard due first; it returns "" and how long to wait
// when none is due.
func (s *Schedule) next(gpu int, now time.Time) (string, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var (
		best   string
		bestAt time.Time
	)
	for id, e := range s.entries {
		if e.gpu != gpu || e.running {
			continue
		}
		if best == "" || e.due.Before(bestAt) || e.due.Equal(bestAt) && id < best {
			best, bestAt = id, e.due
		}
		if late := now.Sub(e.due); late > s.grace() && !e.overdue {
			e.overdue = true
			s.log.WithFields(logrus.Fields{logfield.ShardID: id, logfield.GPU: gpu, logfield.OverdueBy: late.Round(time.Millisecond).String()}).
				Warn("verification is behind schedule: the shard is overdue (raise verify.interval or verify.max_bytes_per_second, or seal fewer bytes per GPU)")
		}
	}
	wait := s.cfg.Resync
	if best != "" {
		if d := bestAt.Sub(now); d <= 0 {
			s.entries[best].running = true
			s.entries[best].started = now
			return best, 0
		} else if d < wait {
			wait = d
		}
	}
	return "", wait
}

// reserveBudget books bytes of the shared budget and returns how long to
// wait before reading them. More bytes than one burst (a whole shard
// hashed on the GPU) are booked burst by burst, back to back.
func (s *Schedule) reserveBudget(bytes uint64, now time.Time) time.Duration {
	if s.budget == nil {
		return 0
	}
	var wait time.Duration
	for bytes > 0 {
		n := min(bytes, uint64(s.budget.Burst()))
		wait = s.budget.ReserveN(now, int(n)).DelayFrom(now)
		bytes -= n
	}
	return wait
}

// pace is the Pacer of scheduled verifications: it books bytes of the
// shared budget and sleeps until they may be read.
func (s *Schedule) pace(ctx context.Context, bytes uint64) error {
	if d := s.reserveBudget(bytes, s.clock.Now()); d > 0 && !sleep(ctx, s.clock, d, nil) {
		return ctx.Err()
	}
	return nil
}

func (s *Schedule) runGPU(ctx context.Context, gpu int) {
	wake := s.wake[gpu]
	for ctx.Err() == nil {
		s.sync()
		id, wait := s.next(gpu, s.clock.Now())
		if id == "" {
			sleep(ctx, s.clock, wait, wake)
			continue
		}
		res, err := s.src.Verify(WithPacer(audit.WithCause(ctx, audit.Cause{Kind: audit.CauseSchedule}), s.pace), id)
		s.finish(id, ctx.Err() == nil)
		entry := s.log.WithFields(logrus.Fields{logfield.ShardID: id, logfield.GPU: gpu, logfield.Result: res.Result, logfield.Duration: res.Duration.String()})
		switch {
		case err == nil:
			entry.Debug("scheduled verification done")
		case KindOf(err) == KindCancelled || KindOf(err) == KindNotFound:
			entry.WithError(err).Debug("scheduled verification cut short")
		default:
			entry.WithError(err).Warn("scheduled verification failed")
		}
	}
}

// finish marks a verification done and schedules the shard's next one.
func (s *Schedule) finish(id string, reschedule bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.entries[id]
	if !ok {
		return
	}
	e.running = false
	e.overdue = false
	if reschedule {
		// The next one is due an interval after this one started, so a
		// slow (paced) verification does not stretch the interval.
		e.due = e.started.Add(s.jittered())
	}
}
