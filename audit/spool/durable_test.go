package spool

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// syncFaults is a segment file whose Write, Truncate and Sync can be made
// to fail, each by its own switch.
type syncFaults struct {
	*os.File
	failWrite, failTruncate, failSync *atomic.Bool
}

func (f syncFaults) Write(b []byte) (int, error) {
	if f.failWrite.Load() {
		return 0, errors.New("injected write failure")
	}
	return f.File.Write(b)
}

func (f syncFaults) Truncate(n int64) error {
	if f.failTruncate.Load() {
		return errors.New("injected truncate failure")
	}
	return f.File.Truncate(n)
}

func (f syncFaults) Sync() error {
	if f.failSync.Load() {
		return errors.New("injected fsync failure")
	}
	return f.File.Sync()
}

type faultSwitches struct{ write, truncate, sync atomic.Bool }

func (sw *faultSwitches) open(p string) (File, error) {
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	return syncFaults{f, &sw.write, &sw.truncate, &sw.sync}, nil
}

// A CRITICAL record that fills its segment is fsynced as the segment is
// closed; when that fsync fails, its receipt must say so, not settle nil.
func TestCriticalReceiptReportsFailedFsyncAtRotation(t *testing.T) {
	var sw faultSwitches
	s := openT(t, Config{Dir: t.TempDir(), SegmentBytes: 1, OpenSegment: sw.open})
	sw.sync.Store(true)
	err := audit.WaitDurable(context.Background(), s.Append(entry(1, audit.SeverityCritical), true), 5*time.Second)
	if !errors.Is(err, ErrWrite) {
		t.Fatalf("receipt of a record whose fsync failed: %v, want ErrWrite", err)
	}
	sw.sync.Store(false)
	if err := audit.WaitDurable(context.Background(), s.Append(entry(2, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatalf("after fsync recovers: %v", err)
	}
}

// A segment closed after a write it could not cut back still holds records
// waiting for their group commit: they are durable only if that segment
// was fsynced, and their receipts must not settle nil otherwise.
func TestWaitingReceiptsWhenSegmentClosedUnsynced(t *testing.T) {
	var sw faultSwitches
	s := openT(t, Config{Dir: t.TempDir(), CommitWindow: time.Minute, OpenSegment: sw.open})
	waiting := s.Append(entry(1, audit.SeverityInfo), false)
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().LastSeq < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	sw.write.Store(true)
	sw.truncate.Store(true)
	sw.sync.Store(true)
	if err := audit.WaitDurable(context.Background(), s.Append(entry(2, audit.SeverityCritical), true), 5*time.Second); !errors.Is(err, ErrWrite) {
		t.Fatalf("critical record whose write failed: %v", err)
	}
	// The writer's next tick settles what waits.
	if err := audit.WaitDurable(context.Background(), waiting, 5*time.Second); !errors.Is(err, ErrWrite) {
		t.Fatalf("receipt of a record never fsynced: %v, want ErrWrite", err)
	}
}

// A crash can leave a segment's size ahead of its data: the file ends in
// zeros, often more than one frame header's worth (a whole block). That
// is a torn tail to cut off, not corruption: the segment, with the good
// records before the zeros, must stay in the spool and be shipped.
func TestZeroFilledTailTruncatedNotQuarantined(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	for i := 0; i < 20; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	closeT(t, s)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := segs[len(segs)-1]
	f, err := os.OpenFile(last, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 4096)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s2 := openT(t, Config{Dir: dir})
	recs := readAll(t, s2)
	st := s2.Stats()
	closeT(t, s2)
	if st.QuarantinedFiles != 0 {
		t.Fatalf("a segment with a zero-filled tail was quarantined (%d files)", st.QuarantinedFiles)
	}
	var events, repairs int
	for _, r := range recs {
		switch r.Name {
		case audit.NameVRAMAllocated:
			events++
		case NameRepair:
			repairs++
			if r.Field("action") != RepairTruncated {
				t.Fatalf("repair %v, want %s", r.Field("action"), RepairTruncated)
			}
		}
	}
	if events != 20 || repairs != 1 {
		t.Fatalf("after the repair the spool ships %d events and %d repair records, want 20 and 1", events, repairs)
	}
	verifyOK(t, dir)
}

// An event that cannot be recorded (larger than a record may be) is lost
// on its own: the events queued beside it, a CRITICAL one included, are
// written and made durable.
func TestUnencodableEventLosesOnlyItself(t *testing.T) {
	dir := t.TempDir()
	gate := make(chan struct{})
	var failures atomic.Int64
	s := openT(t, Config{Dir: dir, OnFailure: func(string) { failures.Add(1) },
		OpenSegment: func(p string) (File, error) {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			return blockingFile{f, gate}, err
		}})
	// The writer takes the first event and blocks writing it, so the next
	// three are written as one batch.
	first := s.Append(entry(0, audit.SeverityInfo), false)
	deadline := time.Now().Add(5 * time.Second)
	for s.queued.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	before := s.Append(entry(1, audit.SeverityCritical), true)
	huge := entry(2, audit.SeverityInfo)
	huge.Fields = append(huge.Fields, audit.Field{Key: "blob", Value: string(make([]byte, maxRecordBytes))})
	bad := s.Append(huge, false)
	after := s.Append(entry(3, audit.SeverityCritical), true)
	close(gate)
	ctx := context.Background()
	for name, r := range map[string]audit.Receipt{"first": first, "before": before, "after": after} {
		if err := audit.WaitDurable(ctx, r, 5*time.Second); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := audit.WaitDurable(ctx, bad, 5*time.Second); !errors.Is(err, ErrWrite) {
		t.Errorf("oversized event: %v, want ErrWrite", err)
	}
	if got := s.Stats().Lost[audit.LossWriteError]; got != 1 || failures.Load() != 1 {
		t.Errorf("lost write_error = %d, failures %d; want 1 and 1", got, failures.Load())
	}
	closeT(t, s)
	if rep := verifyOK(t, dir); rep.Losses != 1 {
		t.Errorf("loss records account for %d events, want 1", rep.Losses)
	}
}

// The shipper must never take a record before it is durable: a record
// shipped (and acknowledged) and then lost in a crash leaves the cursor
// past the end of the local chain, so the restarted spool numbers on from
// the cursor with a gap that `audit verify` reports for good, and the
// collector holds records the node no longer has.
func TestReaderShipsOnlyDurableRecords(t *testing.T) {
	s := openT(t, Config{Dir: t.TempDir(), CommitWindow: time.Minute})
	r := s.Append(entry(1, audit.SeverityInfo), false)
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().LastSeq < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	rd := s.NewReader(0)
	recs, err := rd.Read(10)
	if err != nil {
		t.Fatal(err)
	}
	if werr := r.Wait(quickly()); len(recs) > 0 && werr != nil {
		t.Fatalf("the reader returned %d record(s) not yet durable (receipt: %v)", len(recs), werr)
	}
	if err := audit.WaitDurable(context.Background(), r, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	recs, err = rd.Read(10)
	if err != nil || len(recs) != 1 || recs[0].ID != "id-000001" {
		t.Fatalf("after the fsync: %d records, %v", len(recs), err)
	}
}

// Two spools must never run on one folder: the second one's start-up
// repair would cut the first one's segment being written, and both would
// write records with the same sequence numbers. The agent opens its spool
// before it finds out, at the control socket, that another one is
// running, so the spool itself must refuse.
func TestSecondOpenOfAFolderRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	if err := audit.WaitDurable(context.Background(), s.Append(entry(1, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	log, _ := quietLogger()
	if s2, err := Open(Config{Dir: dir, Logger: log}); !errors.Is(err, ErrInUse) {
		if err == nil {
			_ = s2.Close(context.Background())
		}
		t.Fatalf("second Open of a folder in use: %v, want ErrInUse", err)
	}
	closeT(t, s)
	s3 := openT(t, Config{Dir: dir})
	closeT(t, s3)
	verifyOK(t, dir)
}
