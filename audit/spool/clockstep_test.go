package spool

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// TestSpoolThroughClockSteps: the spool's clock jumps back 3 hours,
// forward 6, back 1. Time checkpoints keep coming in every phase,
// retention keeps running and deletes only shipped segments, the sequence
// stays contiguous although record times go backwards, and the chain
// verifies.
func TestSpoolThroughClockSteps(t *testing.T) {
	// Large segments: every checkpoint is a time checkpoint.
	_, ends, ckpts := stepPhases(t, 1<<20)
	for k, n := range ckpts[1:] {
		if n == 0 {
			t.Errorf("after clock step %d: no time checkpoint in %d records over 2.5s (interval 300ms)", k+1, ends[k+1]-ends[k])
		}
	}
	// Small segments: retention ran after the step forward and after the
	// step back again, and deleted shipped segments only.
	recs, ends, _ := stepPhases(t, 4096)
	if recs[0].Seq <= ends[1] {
		t.Errorf("retention stalled after the clock stepped back: the first record left is %d, the segments up to %d (shipped, 5 hours old) are still there", recs[0].Seq, ends[1])
	}
	if recs[0].Seq > ends[2]+1 {
		t.Errorf("an unshipped record was deleted: the first left is %d, shipped %d", recs[0].Seq, ends[2])
	}
}

// stepPhases writes records to a spool with segments of segmentBytes for
// 2.5s in each of four phases, the clock (without a monotonic reading, the
// worst case) jumping back 3 hours, forward 6, back 1 between them; before
// the last two jumps what was written is shipped. It checks the sequence
// and the chain, and returns the records left, the last sequence number
// of each phase and the checkpoints written in each.
func stepPhases(t *testing.T, segmentBytes int64) ([]Record, []uint64, []int) {
	dir := t.TempDir()
	var mu sync.Mutex
	offset := time.Duration(0)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return time.Now().Round(0).Add(offset) }
	s := openT(t, Config{Dir: dir, SegmentBytes: segmentBytes, Retention: time.Hour, CheckpointInterval: 300 * time.Millisecond, CheckpointEvery: 1 << 30, Now: clock})
	ctx := context.Background()
	i := 0
	phase := func() []Record {
		end := time.Now().Add(2500 * time.Millisecond)
		for time.Now().Before(end) {
			s.Append(entry(i, audit.SeverityInfo), false)
			i++
			time.Sleep(50 * time.Millisecond)
		}
		if err := audit.WaitDurable(ctx, s.Append(entry(i, audit.SeverityCritical), true), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		i++
		return readAll(t, s)
	}
	var ends []uint64
	var ckpts []int
	record := func(recs []Record) {
		from, n := uint64(0), 0
		if len(ends) > 0 {
			from = ends[len(ends)-1]
		}
		for _, r := range recs {
			if r.Seq > from && r.Name == NameCheckpoint {
				n++
			}
		}
		ends, ckpts = append(ends, recs[len(recs)-1].Seq), append(ckpts, n)
	}
	record(phase())
	for _, jump := range []time.Duration{-3 * time.Hour, 6 * time.Hour, -time.Hour} {
		if jump > 0 || len(ends) == 3 {
			if err := s.Ack(ends[len(ends)-1]); err != nil {
				t.Fatal(err)
			}
		}
		mu.Lock()
		offset += jump
		mu.Unlock()
		record(phase())
	}
	recs := readAll(t, s)
	for k := 1; k < len(recs); k++ {
		if recs[k].Seq != recs[k-1].Seq+1 || recs[k].PrevHash != recs[k-1].Hash {
			t.Fatalf("chain out of order at seq %d after %d", recs[k].Seq, recs[k-1].Seq)
		}
	}
	t.Logf("segments of %d bytes: phases ended at seq %v with %v checkpoints; %d records left, from seq %d", segmentBytes, ends, ckpts, len(recs), recs[0].Seq)
	closeT(t, s)
	verifyOK(t, dir)
	return recs, ends, ckpts
}
