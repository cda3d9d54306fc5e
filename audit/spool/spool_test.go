package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func quietLogger() (logrus.FieldLogger, *test.Hook) {
	l, h := test.NewNullLogger()
	return l, h
}

func entry(i int, sev audit.Severity) Entry {
	return Entry{
		Name: audit.NameVRAMAllocated, Severity: sev, ID: fmt.Sprintf("id-%06d", i), Time: time.Unix(1700000000, int64(i)).UTC(),
		WorkerID: "node-a",
		Fields: []audit.Field{
			{Key: "shard_id", Value: fmt.Sprintf("shard-%d", i)},
			{Key: "gpu_device", Value: int64(i % 4)},
			{Key: "requested_bytes", Value: uint64(i) * 4096},
			{Key: "flag", Value: i%2 == 0},
		},
	}
}

func openT(t *testing.T, cfg Config) *Spool {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger, _ = quietLogger()
	}
	if cfg.CheckpointKey == nil {
		cfg.CheckpointKey = testKey
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func closeT(t *testing.T, s *Spool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

func readAll(t *testing.T, s *Spool) []Record {
	t.Helper()
	r := s.NewReader(0)
	var out []Record
	for {
		recs, err := r.Read(1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return out
		}
		out = append(out, recs...)
	}
}

func verifyOK(t *testing.T, dir string) Report {
	t.Helper()
	rep, err := Verify(dir, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() {
		t.Fatalf("verify found problems: %v", rep.Problems)
	}
	return rep
}

func TestFrameRoundTrip(t *testing.T) {
	e := entry(42, audit.SeverityCritical)
	e.TraceID = [16]byte{1, 2, 3}
	e.SpanID = [8]byte{4, 5}
	e.TraceFlags = 1
	e.Fields = append(e.Fields, audit.Field{Key: "neg", Value: int64(-5)}, audit.Field{Key: "empty", Value: ""})
	prev := [32]byte{9}
	b, h, err := appendFrame(nil, 17, prev, &e)
	if err != nil {
		t.Fatal(err)
	}
	var got []Record
	end, err := scanFrames(bytes.NewReader(b), 0, int64(len(b)), func(r Record, _, _ int64) error { got = append(got, r); return nil })
	if err != nil || end != int64(len(b)) || len(got) != 1 {
		t.Fatalf("scan: end %d err %v records %d", end, err, len(got))
	}
	r := got[0]
	if r.Seq != 17 || r.PrevHash != prev || r.Hash != h || r.ID != e.ID || !r.Time.Equal(e.Time) || r.TraceID != e.TraceID || r.SpanID != e.SpanID || r.TraceFlags != 1 || r.Severity != audit.SeverityCritical || r.WorkerID != "node-a" {
		t.Fatalf("round trip changed the record: %+v", r)
	}
	if fmt.Sprint(r.Fields) != fmt.Sprint(e.Fields) {
		t.Fatalf("fields: got %v want %v", r.Fields, e.Fields)
	}
	// Every single-bit flip is caught by the CRC.
	for i := 0; i < len(b)*8; i += 7 {
		c := bytes.Clone(b)
		c[i/8] ^= 1 << (i % 8)
		_, err := scanFrames(bytes.NewReader(c), 0, int64(len(c)), func(Record, int64, int64) error { return nil })
		var fe *FrameError
		if !errors.As(err, &fe) {
			t.Fatalf("bit %d flipped: no frame error (%v)", i, err)
		}
	}
	if _, _, err := appendFrame(nil, 1, prev, &Entry{Fields: []audit.Field{{Key: "x", Value: 1.5}}}); err == nil {
		t.Fatal("a float field was accepted")
	}
}

func TestAppendReopenVerify(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir, SegmentBytes: 4096, CheckpointEvery: 50})
	var rs []audit.Receipt
	for i := 0; i < 300; i++ {
		sev := audit.SeverityInfo
		if i%25 == 0 {
			sev = audit.SeverityCritical
		}
		rs = append(rs, s.Append(entry(i, sev), sev == audit.SeverityCritical))
	}
	for i, r := range rs {
		if err := audit.WaitDurable(context.Background(), r, 5*time.Second); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	closeT(t, s)
	rep := verifyOK(t, dir)
	if rep.Segments < 3 {
		t.Fatalf("want several segments of 4 KiB, got %d", rep.Segments)
	}
	if rep.Checkpoints == 0 || !rep.CheckpointsChecked {
		t.Fatalf("no checked checkpoint: %+v", rep)
	}
	// Reopen: the chain goes on.
	s2 := openT(t, Config{Dir: dir, SegmentBytes: 4096})
	if err := audit.WaitDurable(context.Background(), s2.Append(entry(1000, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	recs := readAll(t, s2)
	closeT(t, s2)
	verifyOK(t, dir)
	ids := map[string]bool{}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
		if i > 0 && r.PrevHash != recs[i-1].Hash {
			t.Fatalf("chain broken at %d", r.Seq)
		}
		ids[r.ID] = true
	}
	for i := 0; i < 300; i++ {
		if !ids[fmt.Sprintf("id-%06d", i)] {
			t.Fatalf("event %d missing", i)
		}
	}
	if !ids["id-001000"] {
		t.Fatal("event after reopen missing")
	}
	// A wrong key fails the checkpoints.
	rep, err := Verify(dir, bytes.Repeat([]byte{8}, 32))
	if err != nil || rep.OK() {
		t.Fatalf("verify with another key: ok=%v err=%v", rep.OK(), err)
	}
}

// TestTornTail cuts the last record short: verify reports it; Open
// truncates it and records the repair; then the spool verifies.
func TestTornTail(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir})
	for i := 0; i < 20; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	closeT(t, s)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	last := segs[len(segs)-1]
	st, _ := os.Stat(last)
	if err := os.Truncate(last, st.Size()-5); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || len(rep.Problems) != 1 || rep.Problems[0].File != filepath.Base(last) {
		t.Fatalf("verify: %+v", rep.Problems)
	}
	p := rep.Problems[0]
	if p.Seq != 21 || !bytes.Contains([]byte(p.Reason), []byte("torn")) {
		t.Fatalf("problem: %v", p)
	}
	s2 := openT(t, Config{Dir: dir})
	recs := readAll(t, s2)
	closeT(t, s2)
	rep = verifyOK(t, dir)
	if len(rep.Repairs) != 1 {
		t.Fatalf("repairs: %v", rep.Repairs)
	}
	var repair *Record
	for i := range recs {
		if recs[i].Name == NameRepair {
			repair = &recs[i]
		}
	}
	if repair == nil || repair.Field("action") != RepairTruncated || repair.Field("offset") != p.Offset {
		t.Fatalf("repair record: %+v", repair)
	}
	if recs[len(recs)-1].Seq != 21 || recs[len(recs)-1].Name != NameRepair { // 20 events, then the repair where the cut checkpoint was
		t.Fatalf("last seq %d", recs[len(recs)-1].Seq)
	}
}

// TestFlippedBitQuarantine flips one bit in a closed segment: verify says
// where; Open quarantines the file (kept, renamed), records the repair, and
// the chain goes on; verify then accepts the recorded break.
func TestFlippedBitQuarantine(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, Config{Dir: dir, SegmentBytes: 2048})
	for i := 0; i < 100; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	closeT(t, s)
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) < 4 {
		t.Fatalf("want at least 4 segments, got %d", len(segs))
	}
	victim := segs[1]
	b, _ := os.ReadFile(victim)
	off := int64(len(b) / 2)
	b[off] ^= 0x10
	if err := os.WriteFile(victim, b, 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(dir, testKey)
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].File != filepath.Base(victim) || rep.Problems[0].Offset > off {
		t.Fatalf("verify: %v", rep.Problems)
	}
	s2 := openT(t, Config{Dir: dir, SegmentBytes: 2048})
	if got := s2.Stats().QuarantinedFiles; got != 1 {
		t.Fatalf("quarantined files %d", got)
	}
	s2.Append(entry(500, audit.SeverityInfo), false)
	closeT(t, s2)
	if _, err := os.Stat(victim + ".quarantined"); err != nil {
		t.Fatalf("quarantined file: %v", err)
	}
	rep = verifyOK(t, dir)
	if len(rep.Breaks) != 1 || len(rep.Repairs) != 1 || len(rep.Quarantined) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	// Deleting the quarantined file's repair trail is noticed: a break
	// without a quarantined file is a problem.
	if err := os.Remove(victim + ".quarantined"); err != nil {
		t.Fatal(err)
	}
	if rep, _ := Verify(dir, testKey); rep.OK() {
		t.Fatal("a missing segment went unnoticed")
	}
}

// faultyFile fails writes while fail is set, like a full disk.
type faultyFile struct {
	*os.File
	fail *atomic.Bool
}

func (f faultyFile) Write(b []byte) (int, error) {
	if f.fail.Load() {
		n, _ := f.File.Write(b[:len(b)/2]) // a partial write first, as a real ENOSPC can leave
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: syscall.ENOSPC}
	}
	return f.File.Write(b)
}

func TestDiskFullInjected(t *testing.T) {
	dir := t.TempDir()
	var fail atomic.Bool
	var failures atomic.Int64
	s := openT(t, Config{Dir: dir, OnFailure: func(string) { failures.Add(1) },
		OpenSegment: func(p string) (File, error) {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			return faultyFile{f, &fail}, err
		}})
	ctx := context.Background()
	if err := audit.WaitDurable(ctx, s.Append(entry(0, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	for i := 1; i <= 10; i++ {
		err := audit.WaitDurable(ctx, s.Append(entry(i, audit.SeverityCritical), true), 5*time.Second)
		if !errors.Is(err, ErrDiskFull) {
			t.Fatalf("event %d during disk full: %v", i, err)
		}
	}
	if got := s.Stats().Lost[audit.LossDiskFull]; got != 10 {
		t.Fatalf("lost disk_full = %d, want 10", got)
	}
	if failures.Load() != 10 {
		t.Fatalf("failures %d", failures.Load())
	}
	fail.Store(false)
	if err := audit.WaitDurable(ctx, s.Append(entry(11, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatalf("writing did not resume: %v", err)
	}
	recs := readAll(t, s)
	closeT(t, s)
	verifyOK(t, dir)
	var names []string
	for _, r := range recs {
		names = append(names, r.Name+"/"+r.ID)
	}
	// event 0, the loss record (10 disk_full), event 11.
	if len(recs) != 3 || recs[1].Name != NameLoss || recs[1].Field("count") != uint64(10) || recs[1].Field("reason") != audit.LossDiskFull || recs[2].ID != "id-000011" {
		t.Fatalf("records: %v", names)
	}
}

func TestMinFreeBytes(t *testing.T) {
	dir := t.TempDir()
	var free atomic.Uint64
	free.Store(1 << 30)
	now := time.Unix(1700000000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	s := openT(t, Config{Dir: dir, MinFreeBytes: 100 << 20, Now: clock, FreeBytes: func(string) (uint64, error) { return free.Load(), nil }})
	ctx := context.Background()
	if err := audit.WaitDurable(ctx, s.Append(entry(0, audit.SeverityInfo), false), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	free.Store(50 << 20)
	advance(2 * time.Second)
	if err := audit.WaitDurable(ctx, s.Append(entry(1, audit.SeverityInfo), false), 5*time.Second); !errors.Is(err, ErrDiskFull) {
		t.Fatalf("INFO event with the disk nearly full: %v", err)
	}
	if err := audit.WaitDurable(ctx, s.Append(entry(2, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatalf("CRITICAL event with the disk nearly full: %v", err)
	}
	free.Store(1 << 30)
	advance(2 * time.Second)
	if err := audit.WaitDurable(ctx, s.Append(entry(3, audit.SeverityInfo), false), 5*time.Second); err != nil {
		t.Fatalf("after space returned: %v", err)
	}
	if got := s.Stats().Lost[audit.LossDiskFull]; got != 1 {
		t.Fatalf("lost %d", got)
	}
	closeT(t, s)
	rep := verifyOK(t, dir)
	if rep.Losses != 1 {
		t.Fatalf("loss records count %d lost events", rep.Losses)
	}
}

// blockingFile blocks every write until released, so the queue fills.
type blockingFile struct {
	*os.File
	gate chan struct{}
}

func (f blockingFile) Write(b []byte) (int, error) {
	<-f.gate
	return f.File.Write(b)
}

func TestQueueFullKeepsRoomForCritical(t *testing.T) {
	dir := t.TempDir()
	gate := make(chan struct{})
	var once sync.Once
	release := func() { once.Do(func() { close(gate) }) }
	s := openT(t, Config{Dir: dir, QueueSize: 64, CriticalReserve: 8,
		OpenSegment: func(p string) (File, error) {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			return blockingFile{f, gate}, err
		}})
	t.Cleanup(release) // runs before the Close that openT registered
	var rs []audit.Receipt
	// The writer takes the first event and blocks writing it; then the
	// queue holds 56 non-critical events and 8 critical ones.
	rs = append(rs, s.Append(entry(0, audit.SeverityInfo), false))
	deadline := time.Now().Add(5 * time.Second)
	for s.queued.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	lost := 0
	for i := 1; i <= 100; i++ {
		r := s.Append(entry(i, audit.SeverityInfo), false)
		if err := r.Wait(quickly()); errors.Is(err, ErrQueueFull) {
			lost++
			continue
		}
		rs = append(rs, r)
	}
	if lost != 100-56 {
		t.Fatalf("lost %d non-critical events, want %d", lost, 100-56)
	}
	for i := 0; i < 8; i++ {
		r := s.Append(entry(200+i, audit.SeverityCritical), true)
		if err := r.Wait(quickly()); errors.Is(err, ErrQueueFull) {
			t.Fatalf("critical event %d found no room", i)
		}
		rs = append(rs, r)
	}
	if err := s.Append(entry(300, audit.SeverityCritical), true).Wait(quickly()); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("critical event past the reserve: %v", err)
	}
	release()
	for _, r := range rs {
		if err := audit.WaitDurable(context.Background(), r, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	closeT(t, s)
	rep := verifyOK(t, dir)
	if rep.Losses != uint64(lost+1) {
		t.Fatalf("loss records account for %d events, want %d", rep.Losses, lost+1)
	}
	if st := s.Stats(); st.Lost[audit.LossQueueFull] != uint64(lost+1) {
		t.Fatalf("stats: %+v", st)
	}
}

// quickly returns a context that ends soon: long enough for a settled
// Receipt to report, short for a pending one.
func quickly() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	_ = cancel
	return ctx
}

func TestRetentionKeepsUnshipped(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1700000000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := openT(t, Config{Dir: dir, SegmentBytes: 1024, Retention: time.Hour, Now: clock})
	for i := 0; i < 60; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	if err := audit.WaitDurable(context.Background(), s.Append(entry(99, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	before := s.Stats()
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	s.applyRetention(clock())
	if after := s.Stats(); after.Bytes != before.Bytes {
		t.Fatal("retention deleted unshipped segments")
	}
	recs := readAll(t, s)
	half := recs[len(recs)/2].Seq
	if err := s.Ack(half); err != nil {
		t.Fatal(err)
	}
	s.applyRetention(clock())
	after := s.Stats()
	if after.Bytes >= before.Bytes {
		t.Fatal("retention deleted nothing")
	}
	rest := readAll(t, s)
	if len(rest) == 0 || rest[0].Seq > half+1 {
		t.Fatalf("an unshipped record was deleted: first left %d, shipped %d", rest[0].Seq, half)
	}
	closeT(t, s)
	if c, err := readCursor(dir); err != nil || c != half {
		t.Fatalf("cursor %d %v", c, err)
	}
	verifyOK(t, dir)
}

func FuzzDecodeBody(f *testing.F) {
	e := entry(1, audit.SeverityInfo)
	b, _, _ := appendFrame(nil, 1, [32]byte{}, &e)
	f.Add(b[frameHeader:])
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{1}, 80))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeBody(body)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		again, _, err := appendFrame(nil, r.Seq, r.PrevHash, &r.Entry)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		r2, err := decodeBody(again[frameHeader:])
		if err != nil || fmt.Sprint(r2.Entry) != fmt.Sprint(r.Entry) || r2.Seq != r.Seq {
			t.Fatalf("decode/encode not stable: %v", err)
		}
	})
}

func FuzzScanFrames(f *testing.F) {
	e := entry(1, audit.SeverityInfo)
	b, _, _ := appendFrame(nil, 1, [32]byte{}, &e)
	b, _, _ = appendFrame(b, 2, [32]byte{}, &e)
	f.Add(b)
	f.Add(b[:len(b)-3])
	f.Fuzz(func(t *testing.T, data []byte) {
		end, err := scanFrames(bytes.NewReader(data), 0, int64(len(data)), func(Record, int64, int64) error { return nil })
		if end > int64(len(data)) {
			t.Fatalf("end %d past %d", end, len(data))
		}
		var fe *FrameError
		if err != nil && !errors.As(err, &fe) {
			t.Fatalf("unexpected error type %v", err)
		}
		if err == nil && end != int64(len(data)) {
			t.Fatalf("clean scan stopped at %d of %d", end, len(data))
		}
	})
}

func TestRotationByAge(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1700000000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	s := openT(t, Config{Dir: dir, SegmentAge: time.Hour, Now: clock})
	ctx := context.Background()
	if err := audit.WaitDurable(ctx, s.Append(entry(0, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		closed := !s.active
		s.mu.Unlock()
		if closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("an old segment was not closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := audit.WaitDurable(ctx, s.Append(entry(1, audit.SeverityCritical), true), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	closeT(t, s)
	rep := verifyOK(t, dir)
	if rep.Segments != 2 {
		t.Fatalf("segments %d, want 2", rep.Segments)
	}
}
