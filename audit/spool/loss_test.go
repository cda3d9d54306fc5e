package spool

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// A loss record that cannot be written is kept for the next write with the
// times of the losses it counts: its first and last lost times stay those
// of the events lost, never the time the record was made.
func TestLossTimesSurviveAFailedWrite(t *testing.T) {
	var sw faultSwitches
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()).UTC() }
	s := openT(t, Config{Dir: t.TempDir(), Now: clock, OpenSegment: sw.open})
	ctx := context.Background()
	sw.write.Store(true)

	t1 := t0.Add(10 * time.Second)
	now.Store(t1.UnixNano())
	if err := audit.WaitDurable(ctx, s.Append(entry(1, audit.SeverityCritical), true), 5*time.Second); !errors.Is(err, ErrWrite) {
		t.Fatalf("event 1 while writes fail: %v, want ErrWrite", err)
	}
	t2 := t1.Add(10 * time.Second)
	now.Store(t2.UnixNano())
	// This batch carries the loss record of event 1; it fails as well.
	if err := audit.WaitDurable(ctx, s.Append(entry(2, audit.SeverityCritical), true), 5*time.Second); !errors.Is(err, ErrWrite) {
		t.Fatalf("event 2 while writes fail: %v, want ErrWrite", err)
	}
	t3 := t2.Add(10 * time.Second)
	now.Store(t3.UnixNano())
	sw.write.Store(false)
	if err := audit.WaitDurable(ctx, s.Append(entry(3, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatalf("writing did not resume: %v", err)
	}
	var loss *Record
	recs := readAll(t, s)
	for i := range recs {
		if recs[i].Name == NameLoss {
			loss = &recs[i]
		}
	}
	if loss == nil {
		t.Fatalf("no loss record among %d records", len(recs))
	}
	if got := loss.Field("count"); got != uint64(2) {
		t.Errorf("loss count %v, want 2", got)
	}
	if got, want := loss.Field("first_lost_at"), t1.Format(time.RFC3339Nano); got != want {
		t.Errorf("first_lost_at %v, want %v (when event 1 was lost)", got, want)
	}
	if got, want := loss.Field("last_lost_at"), t2.Format(time.RFC3339Nano); got != want {
		t.Errorf("last_lost_at %v, want %v (when event 2 was lost)", got, want)
	}
}
