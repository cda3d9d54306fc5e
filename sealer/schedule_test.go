package sealer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"
	"github.com/vramseal/vramseal/internal/logfield"
)

// fakeSource is a ScheduleSource whose verifications take no (fake) time
// unless a shard is set to block.
type fakeSource struct {
	clock *fakeClock
	gpus  []int

	mu       sync.Mutex
	shards   []ShardStatus
	calls    map[string][]time.Time
	inflight map[string]int
	overlap  []string
	bytes    uint64
	block    map[string]chan struct{}
}

func newFakeSource(clock *fakeClock, gpus []int) *fakeSource {
	return &fakeSource{clock: clock, gpus: gpus, calls: map[string][]time.Time{}, inflight: map[string]int{}, block: map[string]chan struct{}{}}
}

func (f *fakeSource) add(id string, gpu int, bytes uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shards = append(f.shards, ShardStatus{Seal: Seal{ShardID: id, GPUDevice: gpu, VRAMBytes: bytes, SealedAt: f.clock.Now()}})
}

func (f *fakeSource) GPUs() []int { return f.gpus }

func (f *fakeSource) List() []ShardStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]ShardStatus(nil), f.shards...)
}

func (f *fakeSource) Verify(ctx context.Context, id string) (VerifyResult, error) {
	f.mu.Lock()
	f.inflight[id]++
	if f.inflight[id] > 1 {
		f.overlap = append(f.overlap, id)
	}
	f.calls[id] = append(f.calls[id], f.clock.Now())
	var size uint64
	for _, s := range f.shards {
		if s.Seal.ShardID == id {
			size = s.Seal.VRAMBytes
		}
	}
	ch := f.block[id]
	f.mu.Unlock()
	if ch != nil {
		<-ch
	}
	// Read the shard in chunks, each paced, as ReadBackLeaves does.
	const chunk = 4 << 20
	for off := uint64(0); off < size; off += chunk {
		n := min(chunk, size-off)
		if err := pace(ctx, n); err != nil {
			f.mu.Lock()
			f.inflight[id]--
			f.mu.Unlock()
			return VerifyResult{ShardID: id, Result: ResultCancelled}, &Error{Op: "verify", ShardID: id, Kind: KindCancelled, Err: err}
		}
		f.mu.Lock()
		f.bytes += n
		f.mu.Unlock()
	}
	f.mu.Lock()
	f.inflight[id]--
	f.mu.Unlock()
	return VerifyResult{ShardID: id, Result: ResultOK, Bytes: size}, nil
}

func (f *fakeSource) callTimes(id string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.calls[id]...)
}

// runFor drives the schedule on the fake clock for d, with workers timers
// pending whenever it is idle; sample, when set, is called at every step.
func runFor(t *testing.T, clock *fakeClock, workers int, d time.Duration, sample func()) {
	t.Helper()
	end := clock.Now().Add(d)
	for clock.Now().Before(end) {
		clock.blockUntil(t, workers)
		if sample != nil {
			sample()
		}
		clock.advanceToNext(end)
	}
	clock.blockUntil(t, workers)
}

func startSchedule(t *testing.T, src *fakeSource, cfg ScheduleConfig) (*Schedule, func()) {
	t.Helper()
	s, err := NewSchedule(src, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()
	return s, func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("schedule did not stop after its context ended")
		}
	}
}

func quietLogger() (*logrus.Logger, *test.Hook) {
	l, hook := test.NewNullLogger()
	l.SetLevel(logrus.DebugLevel)
	return l, hook
}

func TestScheduleIntervalAndJitter(t *testing.T) {
	clock := newFakeClock()
	src := newFakeSource(clock, []int{0, 1})
	for i := range 6 {
		src.add(fmt.Sprintf("shard-%d", i), i%2, 1<<20)
	}
	const interval = time.Minute
	const jitter = 0.2
	log, _ := quietLogger()
	rng := rand.New(rand.NewPCG(1, 2))
	s, stop := startSchedule(t, src, ScheduleConfig{Interval: interval, Jitter: jitter, Clock: clock, Rand: rng.Float64, Logger: log})
	start := clock.Now()
	runFor(t, clock, 2, 2*time.Hour, func() {
		for g, n := range s.OverdueShards() {
			if n != 0 {
				t.Fatalf("GPU %d: %d overdue shards with no budget and instant verifications", g, n)
			}
		}
	})
	stop()

	lo := time.Duration(float64(interval) * (1 - jitter))
	hi := time.Duration(float64(interval) * (1 + jitter))
	var minGap, maxGap time.Duration = time.Hour, 0
	for i := range 6 {
		id := fmt.Sprintf("shard-%d", i)
		calls := src.callTimes(id)
		// 2 h at 48–72 s per verification: 100 to 150 of them.
		if len(calls) < 100 || len(calls) > 150 {
			t.Errorf("%s: %d verifications in 2h at %s ± %.0f%%", id, len(calls), interval, jitter*100)
		}
		prev := start
		for _, c := range calls {
			gap := c.Sub(prev)
			if gap < lo || gap > hi {
				t.Fatalf("%s: %s between verifications, want %s to %s", id, gap, lo, hi)
			}
			minGap, maxGap = min(minGap, gap), max(maxGap, gap)
			prev = c
		}
		if due, ok := s.NextDue(id); !ok || !due.After(prev) {
			t.Errorf("%s: next due %v (%v), want after the last verification %v", id, due, ok, prev)
		}
	}
	// The jitter really spreads: gaps cover most of the allowed range.
	if minGap > interval-interval/8 || maxGap < interval+interval/8 {
		t.Errorf("gaps from %s to %s: jitter of %.0f%% not applied", minGap, maxGap, jitter*100)
	}
	if len(src.overlap) > 0 {
		t.Errorf("overlapping verifications of %v", src.overlap)
	}
}

func TestScheduleByteBudgetAcrossShards(t *testing.T) {
	for _, tc := range []struct {
		name    string
		shards  int
		rate    uint64
		overdue bool
	}{
		// 8 × 100 MB every 10 s wants 80 MB/s; the budget allows 20 MB/s.
		{"saturated", 8, 20e6, true},
		// 2 × 100 MB every 10 s wants 20 MB/s; the budget allows 50 MB/s.
		{"ample", 2, 50e6, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			src := newFakeSource(clock, []int{0, 1})
			for i := range tc.shards {
				src.add(fmt.Sprintf("s%d", i), i%2, 100e6)
			}
			log, hook := quietLogger()
			s, stop := startSchedule(t, src, ScheduleConfig{
				Interval: 10 * time.Second, Jitter: 0.1, MaxBytesPerSecond: tc.rate,
				Clock: clock, Rand: rand.New(rand.NewPCG(3, 4)).Float64, Logger: log,
			})
			start := clock.Now()
			sawOverdue := false
			runFor(t, clock, 2, 20*time.Minute, func() {
				for _, n := range s.OverdueShards() {
					sawOverdue = sawOverdue || n > 0
				}
			})
			elapsed := clock.Now().Sub(start).Seconds()
			stop()
			src.mu.Lock()
			got := float64(src.bytes) / elapsed
			src.mu.Unlock()
			want := float64(tc.rate)
			if !tc.overdue {
				want = float64(tc.shards) * 100e6 / 10 // demand, below the budget
			}
			t.Logf("verified %.2f MB/s over %.0fs (budget %.0f MB/s, want %.2f MB/s)", got/1e6, elapsed, float64(tc.rate)/1e6, want/1e6)
			if got > want*1.1 || got < want*0.9 {
				t.Errorf("verified %.1f MB/s over %.0fs, want %.1f MB/s ± 10%%", got/1e6, elapsed, want/1e6)
			}
			if got > float64(tc.rate)*1.1 {
				t.Errorf("verified %.1f MB/s, above the budget of %.1f MB/s by more than 10%%", got/1e6, float64(tc.rate)/1e6)
			}
			if sawOverdue != tc.overdue {
				t.Errorf("overdue shards seen: %v, want %v", sawOverdue, tc.overdue)
			}
			logged := false
			for _, e := range hook.AllEntries() {
				if e.Level == logrus.WarnLevel && e.Data[logfield.ShardID] != nil && e.Message != "" {
					logged = true
				}
			}
			if logged != tc.overdue {
				t.Errorf("overdue warning logged: %v, want %v", logged, tc.overdue)
			}
		})
	}
}

func TestScheduleNoOverlapWhenVerificationOutlastsInterval(t *testing.T) {
	clock := newFakeClock()
	src := newFakeSource(clock, []int{0, 1})
	src.add("slow", 0, 1<<20)
	src.add("other", 1, 1<<20)
	release := make(chan struct{})
	src.block["slow"] = release
	log, _ := quietLogger()
	s, stop := startSchedule(t, src, ScheduleConfig{Interval: time.Minute, Clock: clock, Logger: log})
	defer stop()

	// GPU 0's worker is stuck in "slow"'s first verification once it is
	// due; only GPU 1's worker waits on the clock.
	clock.blockUntil(t, 2)
	clock.advance(time.Minute)
	for range 10 {
		clock.blockUntil(t, 1)
		clock.advance(time.Minute)
	}
	clock.blockUntil(t, 1)
	if n := len(src.callTimes("slow")); n != 1 {
		t.Fatalf("slow shard verified %d times while its first verification ran for 10 intervals", n)
	}
	if n := len(src.callTimes("other")); n < 9 {
		t.Errorf("the other GPU's shard was verified %d times in 10 intervals", n)
	}
	if o := s.OverdueShards(); o[0] != 0 {
		t.Errorf("a shard being verified counts as overdue: %v", o)
	}
	finishedAt := clock.Now()
	close(release)
	clock.blockUntil(t, 2)
	due, ok := s.NextDue("slow")
	if !ok || due.Sub(finishedAt) != time.Minute {
		t.Errorf("next due %v after a verification ending %v, want one interval later", due, finishedAt)
	}
	src.mu.Lock()
	defer src.mu.Unlock()
	if len(src.overlap) > 0 {
		t.Errorf("overlapping verifications of %v", src.overlap)
	}
}

func TestScheduleForgetsReleasedShards(t *testing.T) {
	clock := newFakeClock()
	src := newFakeSource(clock, []int{0})
	src.add("a", 0, 1)
	src.add("b", 0, 1)
	log, _ := quietLogger()
	s, stop := startSchedule(t, src, ScheduleConfig{Interval: time.Minute, Clock: clock, Logger: log})
	defer stop()
	clock.blockUntil(t, 1)
	if _, ok := s.NextDue("b"); !ok {
		t.Fatal("shard b not scheduled")
	}
	src.mu.Lock()
	src.shards = src.shards[:1]
	src.mu.Unlock()
	s.Notify()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, ok := s.NextDue("b"); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("released shard still scheduled after Notify")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNewScheduleRefusesBadConfig(t *testing.T) {
	src := newFakeSource(newFakeClock(), []int{0})
	for _, cfg := range []ScheduleConfig{{}, {Interval: time.Second, Jitter: 1}, {Interval: time.Second, Jitter: -0.1}} {
		if _, err := NewSchedule(src, cfg); err == nil {
			t.Errorf("NewSchedule(%+v) accepted", cfg)
		}
	}
}

func TestScheduleFollowsAShardResealedOnAnotherGPU(t *testing.T) {
	clock := newFakeClock()
	src := newFakeSource(clock, []int{0, 1})
	src.add("a", 0, 1)
	log, _ := quietLogger()
	s, stop := startSchedule(t, src, ScheduleConfig{Interval: time.Minute, Clock: clock, Logger: log})
	defer stop()
	clock.blockUntil(t, 2)
	first, _ := s.NextDue("a")
	// Released and sealed again on GPU 1, between two looks of the schedule.
	clock.advance(10 * time.Second)
	src.mu.Lock()
	src.shards = []ShardStatus{{Seal: Seal{ShardID: "a", GPUDevice: 1, VRAMBytes: 1, SealedAt: clock.Now()}}}
	src.mu.Unlock()
	s.Notify()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if due, _ := s.NextDue("a"); due.After(first) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the re-sealed shard kept its old schedule")
		}
		time.Sleep(time.Millisecond)
	}
	runFor(t, clock, 2, 3*time.Minute, nil)
	src.mu.Lock()
	defer src.mu.Unlock()
	if n := len(src.calls["a"]); n < 2 {
		t.Errorf("re-sealed shard verified %d times in 3 intervals", n)
	}
}
