package spool

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
)

// cut is one way to cut a spool short: segment file index seg truncated
// at byte off, and every later segment removed.
type cut struct {
	seg     int
	off     int64
	lastSeq uint64 // the last record left (0: none)
}

// frameCuts lists every frame boundary of the spool in dir, in order.
func frameCuts(t *testing.T, dir string) ([]string, []cut) {
	t.Helper()
	l, err := listDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var cuts []cut
	var last uint64
	for i, sf := range l.segments {
		names = append(names, sf.name)
		cuts = append(cuts, cut{seg: i, off: 0, lastSeq: last})
		f, err := os.Open(filepath.Join(dir, sf.name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = scanFrames(f, 0, sf.size, func(rec Record, _, end int64) error {
			last = rec.Seq
			cuts = append(cuts, cut{seg: i, off: end, lastSeq: last})
			return nil
		})
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	return names, cuts
}

// copyCut copies the spool in src to a new folder, cut as c says.
func copyCut(t *testing.T, src string, names []string, c cut) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Truncate(filepath.Join(dst, names[c.seg]), c.off); err != nil {
		t.Fatal(err)
	}
	for _, n := range names[c.seg+1:] {
		if err := os.Remove(filepath.Join(dst, n)); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func writeSpool(t *testing.T, dir string, from, n int) {
	t.Helper()
	s := openT(t, Config{Dir: dir, SegmentBytes: 2048, CheckpointEvery: 7})
	for i := from; i < from+n; i++ {
		s.Append(entry(i, audit.SeverityInfo), false)
	}
	closeT(t, s)
}

// Every cut at a frame boundary at or before the anchor, whole trailing
// segments removed with it, fails audit verify naming the missing range;
// cuts after the anchor are the unauthenticated tail, reported with its
// length.
func TestCutShortSpoolFailsVerify(t *testing.T) {
	dir := t.TempDir()
	writeSpool(t, dir, 0, 40)
	anchored, err := os.ReadFile(filepath.Join(dir, cursorName))
	if err != nil {
		t.Fatal(err)
	}
	a, err := ReadAnchor(dir)
	if err != nil || a.CheckpointSeq == 0 {
		t.Fatalf("anchor after a clean close: %+v, %v", a, err)
	}
	// A later run whose anchor never made it to disk: its records are
	// the tail.
	writeSpool(t, dir, 40, 5)
	if err := os.WriteFile(filepath.Join(dir, cursorName), anchored, 0o600); err != nil {
		t.Fatal(err)
	}
	rep := verifyOK(t, dir)
	end := a.End()
	if rep.Tail != rep.LastSeq-end || rep.Tail < 5 {
		t.Fatalf("tail %d, want %d (last %d, anchor %d)", rep.Tail, rep.LastSeq-end, rep.LastSeq, end)
	}
	names, cuts := frameCuts(t, dir)
	if len(names) < 3 {
		t.Fatalf("want several segments, got %d", len(names))
	}
	checked, tails := 0, 0
	for _, c := range cuts {
		if c.lastSeq == rep.LastSeq {
			continue // no cut
		}
		d := copyCut(t, dir, names, c)
		got, err := Verify(d, testKey)
		if err != nil {
			t.Fatal(err)
		}
		if c.lastSeq >= end {
			if !got.OK() || got.Tail != c.lastSeq-end {
				t.Errorf("cut after seq %d (in the tail): ok=%v tail=%d, want ok and tail %d: %v", c.lastSeq, got.OK(), got.Tail, c.lastSeq-end, got.Problems)
			}
			tails++
			continue
		}
		want := fmt.Sprintf("records %d..%d missing", c.lastSeq+1, end)
		if c.lastSeq == 0 {
			want = fmt.Sprintf("records 1..%d missing", end)
		}
		found := false
		for _, p := range got.Problems {
			found = found || strings.Contains(p.Reason, want)
		}
		if got.OK() || !found {
			t.Errorf("cut after seq %d (segment %d, offset %d): ok=%v, want a problem naming %q: %v", c.lastSeq, c.seg, c.off, got.OK(), want, got.Problems)
		}
		checked++
	}
	if checked < 40 || tails < 5 {
		t.Fatalf("checked %d cuts before the anchor and %d in the tail", checked, tails)
	}
	t.Logf("%d cuts at or before the anchor (seq %d) failed naming the range; %d cuts in the tail reported as such", checked, end, tails)
}

// A start on a spool cut short logs an error and writes a repair record
// naming the missing range; the chain goes on after the anchor, and
// verify still names the gap.
func TestRestartAfterCutWritesRepair(t *testing.T) {
	dir := t.TempDir()
	writeSpool(t, dir, 0, 30)
	end := func() uint64 { a, _ := ReadAnchor(dir); return a.End() }()
	names, cuts := frameCuts(t, dir)
	c := cuts[len(cuts)/2]
	d := copyCut(t, dir, names, c)
	log, hook := quietLogger()
	s := openT(t, Config{Dir: d, Logger: log})
	recs := readAll(t, s)
	closeT(t, s)
	var repair *Record
	for i := range recs {
		if recs[i].Name == NameRepair && recs[i].Field("action") == RepairMissing {
			repair = &recs[i]
		}
	}
	if repair == nil {
		t.Fatalf("no %s repair record among %d records", RepairMissing, len(recs))
	}
	if repair.Field("first_missing_seq") != c.lastSeq+1 || repair.Field("last_missing_seq") != end || repair.Seq != end+1 {
		t.Fatalf("repair record: seq %d %v", repair.Seq, repair.Fields)
	}
	logged := false
	for _, e := range hook.AllEntries() {
		logged = logged || (e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "records missing"))
	}
	if !logged {
		t.Fatal("no error logged for the gap")
	}
	rep, err := Verify(d, testKey)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("records %d..%d missing", c.lastSeq+1, end)
	if rep.OK() || !strings.Contains(fmt.Sprint(rep.Problems), want) {
		t.Fatalf("verify after the restart: %v, want a problem naming %q", rep.Problems, want)
	}
}

// A segment file removed from the middle of the spool: the next start logs
// an error and writes a repair record naming the records; the start after
// that does not repeat it.
func TestRestartAfterMiddleSegmentRemoved(t *testing.T) {
	dir := t.TempDir()
	writeSpool(t, dir, 0, 40)
	l, err := listDir(dir)
	if err != nil || len(l.segments) < 4 {
		t.Fatalf("segments %v %v", l.segments, err)
	}
	gone := l.segments[1]
	from, to := gone.first, l.segments[2].first-1
	if err := os.Remove(filepath.Join(dir, gone.name)); err != nil {
		t.Fatal(err)
	}
	missing := func() []Record {
		var out []Record
		if err := ReadDir(dir, func(r Record) error {
			if r.Name == NameRepair && r.Field("action") == RepairMissing {
				out = append(out, r)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	log, hook := quietLogger()
	closeT(t, openT(t, Config{Dir: dir, Logger: log}))
	got := missing()
	if len(got) != 1 || got[0].Field("first_missing_seq") != from || got[0].Field("last_missing_seq") != to {
		t.Fatalf("repair records %v, want one naming %d..%d", got, from, to)
	}
	logged := false
	for _, e := range hook.AllEntries() {
		logged = logged || (e.Level == logrus.ErrorLevel && strings.Contains(e.Message, "a segment file was removed"))
	}
	if !logged {
		t.Fatal("no error logged for the removed segment")
	}
	closeT(t, openT(t, Config{Dir: dir}))
	if got := missing(); len(got) != 1 {
		t.Fatalf("the second start repeated the repair record: %d", len(got))
	}
	rep, err := Verify(dir, testKey)
	if err != nil || rep.OK() || !strings.Contains(fmt.Sprint(rep.Problems), fmt.Sprintf("records %d..%d missing", from, to)) {
		t.Fatalf("verify: %v %v", rep.Problems, err)
	}
}
