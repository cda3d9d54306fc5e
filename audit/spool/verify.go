package spool

import (
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Problem is one place where a spool is not intact.
type Problem struct {
	// File is the segment file's name, Offset the byte offset of the bad
	// record in it, Seq the sequence number that record has or should
	// have.
	File   string
	Offset int64
	Seq    uint64
	Reason string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s: offset %d: seq %d: %s", p.File, p.Offset, p.Seq, p.Reason)
}

// Report is what Verify found.
type Report struct {
	Segments    int
	Records     int
	FirstSeq    uint64
	LastSeq     uint64
	Checkpoints int
	// CheckpointsChecked is true when a key was given and every
	// checkpoint's HMAC was checked.
	CheckpointsChecked bool
	// Repairs lists the repair records found (what a start-up truncated
	// or quarantined); Breaks the chain breaks that a repair record
	// accounts for (a quarantined segment).
	Repairs     []string
	Quarantined []string
	Breaks      []string
	// Losses counts the events that loss records say were lost.
	Losses uint64
	// Anchor is what the cursor file vouches for: the segments must reach
	// its End, and hold its checkpoint with that hash.
	Anchor Anchor
	// Tail counts the records after the anchor's end: nothing outside the
	// segments vouches for them, so a cut among them cannot be seen.
	Tail     uint64
	Problems []Problem
}

// OK reports whether the spool is intact.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Verify checks a spool folder offline: every segment's framing (length,
// CRC-32C), sequence numbers without gaps, the hash chain across segments,
// and, when key is given, every checkpoint's HMAC. A break in the chain next
// to a quarantined segment is accepted when a repair record names that file.
// The chain's first available record is taken as its start (older segments
// may have been removed by retention after they were shipped).
func Verify(dir string, key []byte) (Report, error) {
	var keys [][]byte
	if len(key) > 0 {
		keys = [][]byte{key}
	}
	return VerifyKeys(dir, keys)
}

// VerifyKeys is Verify with any number of checkpoint keys (one per seal
// secret, as after a rotation): a checkpoint verifies when one of them
// does.
func VerifyKeys(dir string, keys [][]byte) (Report, error) {
	var rep Report
	st, err := os.Stat(dir)
	if err != nil {
		return rep, fmt.Errorf("audit spool: %w", err)
	}
	if !st.IsDir() {
		return rep, fmt.Errorf("audit spool: %s is not a directory", dir)
	}
	l, err := listDir(dir)
	if err != nil {
		return rep, err
	}
	rep.CheckpointsChecked = len(keys) > 0
	anchor, aerr := ReadAnchor(dir)
	if aerr != nil {
		rep.Problems = append(rep.Problems, Problem{File: cursorName, Reason: "anchor unreadable: " + aerr.Error()})
	}
	rep.Anchor = anchor
	var lastName string
	var lastEnd int64
	for _, q := range l.quarantined {
		rep.Quarantined = append(rep.Quarantined, q.name)
	}
	named := map[string]bool{} // files named by repair records
	pending := map[string]Problem{}
	var (
		havePrev  bool
		prevFirst uint64
		prevLast  uint64
		prevHash  [32]byte
	)
	for _, sf := range l.segments {
		path := filepath.Join(dir, sf.name)
		f, err := os.Open(path)
		if err != nil {
			return rep, fmt.Errorf("audit spool: %w", err)
		}
		rep.Segments++
		expect := sf.first
		count := 0
		broken := false
		_, serr := scanFrames(f, 0, sf.size, func(rec Record, off, end int64) error {
			if count == 0 && havePrev && (rec.Seq != prevLast+1 || rec.PrevHash != prevHash) {
				p := Problem{File: sf.name, Offset: off, Seq: rec.Seq}
				if rec.Seq > prevLast+1 {
					p.Reason = fmt.Sprintf("sequence gap: records %d..%d missing (previous segment ends at %d)", prevLast+1, rec.Seq-1, prevLast)
				} else if rec.Seq != prevLast+1 {
					p.Reason = fmt.Sprintf("sequence gap: previous segment ends at %d", prevLast)
				} else {
					p.Reason = "hash chain break: prev_hash does not match the previous record"
				}
				if q := quarantinedBetween(l.quarantined, prevFirst, sf.first); q != "" {
					p.Reason += " (after quarantined " + q + ")"
					pending[q] = p
				} else {
					rep.Problems = append(rep.Problems, p)
				}
			}
			if rec.Seq != expect {
				rep.Problems = append(rep.Problems, Problem{File: sf.name, Offset: off, Seq: rec.Seq, Reason: fmt.Sprintf("sequence %d where %d was due", rec.Seq, expect)})
				return errStop
			}
			if count > 0 && rec.PrevHash != prevHash {
				rep.Problems = append(rep.Problems, Problem{File: sf.name, Offset: off, Seq: rec.Seq, Reason: "hash chain break: prev_hash does not match the previous record"})
				return errStop
			}
			if anchor.CheckpointSeq > 0 && rec.Seq == anchor.CheckpointSeq {
				if rec.Hash != anchor.CheckpointHash || rec.Name != NameCheckpoint {
					rep.Problems = append(rep.Problems, Problem{File: sf.name, Offset: off, Seq: rec.Seq, Reason: "not the checkpoint the cursor file anchors (records replaced)"})
				}
			}
			lastName, lastEnd = sf.name, end
			switch rec.Name {
			case NameCheckpoint:
				rep.Checkpoints++
				if len(keys) > 0 {
					if !CheckpointVerifies(rec, keys) {
						rep.Problems = append(rep.Problems, Problem{File: sf.name, Offset: off, Seq: rec.Seq, Reason: "checkpoint HMAC does not verify (altered records, or another seal secret)"})
					}
				}
			case NameRepair:
				file, _ := rec.Field("file").(string)
				action, _ := rec.Field("action").(string)
				detail, _ := rec.Field("detail").(string)
				named[file] = true
				rep.Repairs = append(rep.Repairs, fmt.Sprintf("seq %d: %s %s (%s)", rec.Seq, action, file, detail))
			case NameLoss:
				n, _ := rec.Field("count").(uint64)
				rep.Losses += n
			}
			if rep.Records == 0 {
				rep.FirstSeq = rec.Seq
			}
			rep.Records++
			rep.LastSeq = rec.Seq
			count++
			expect++
			prevHash = rec.Hash
			prevLast = rec.Seq
			return nil
		})
		f.Close()
		var fe *FrameError
		switch {
		case serr == nil:
		case errors.Is(serr, errStop):
			broken = true
		case errors.As(serr, &fe):
			broken = true
			rep.Problems = append(rep.Problems, Problem{File: sf.name, Offset: fe.Offset, Seq: expect, Reason: fe.What()})
		default:
			return rep, fmt.Errorf("audit spool: %s: %w", sf.name, serr)
		}
		if broken {
			havePrev = false // the next segment cannot be linked
			continue
		}
		if count > 0 {
			havePrev = true
			prevFirst = sf.first
		}
	}
	rep.checkAnchor(lastName, lastEnd)
	for q, p := range pending {
		if named[q] {
			rep.Breaks = append(rep.Breaks, p.String())
		} else {
			rep.Problems = append(rep.Problems, p)
		}
	}
	for _, q := range rep.Quarantined {
		if !named[q] {
			rep.Problems = append(rep.Problems, Problem{File: q, Reason: "quarantined segment not named by any repair record"})
		}
	}
	return rep, nil
}

// CheckpointVerifies reports whether a checkpoint record's HMAC verifies
// with one of keys.
func CheckpointVerifies(rec Record, keys [][]byte) bool {
	got, _ := rec.Field("hmac").(string)
	mac, err := hex.DecodeString(got)
	if err != nil {
		return false
	}
	for _, k := range keys {
		if hmac.Equal(mac, CheckpointMAC(k, rec.Seq, rec.PrevHash)) {
			return true
		}
	}
	return false
}

// checkAnchor fails a spool whose segments end before the anchor, naming
// the missing range, and counts the tail after it.
func (rep *Report) checkAnchor(lastName string, lastEnd int64) {
	end := rep.Anchor.End()
	if rep.LastSeq > end {
		rep.Tail = rep.LastSeq - end
		if rep.Records < int(rep.Tail) {
			rep.Tail = uint64(rep.Records)
		}
	}
	if rep.Records > 0 && rep.LastSeq >= end {
		return
	}
	if end == 0 {
		return
	}
	from := rep.LastSeq + 1
	why := fmt.Sprintf("spool cut short: records %d..%d missing (the cursor file says %d were shipped and the last checkpoint is %d)", from, end, rep.Anchor.ShippedSeq, rep.Anchor.CheckpointSeq)
	if rep.Records == 0 {
		from = 1
		why = fmt.Sprintf("spool cut short: records 1..%d missing: no records left, but the cursor file says %d were shipped and the last checkpoint is %d", end, rep.Anchor.ShippedSeq, rep.Anchor.CheckpointSeq)
	}
	// A break where the chain ends already names the place: say there
	// what is missing, as one problem.
	if n := len(rep.Problems); n > 0 && rep.Problems[n-1].Seq == from {
		rep.Problems[n-1].Reason += "; " + why
		return
	}
	if lastName == "" {
		lastName = cursorName
	}
	rep.Problems = append(rep.Problems, Problem{File: lastName, Offset: lastEnd, Seq: from, Reason: why})
}

// quarantinedBetween returns the name of a quarantined segment whose
// original first sequence number lies in (after, upto], or "".
func quarantinedBetween(q []segFile, after, upto uint64) string {
	for _, f := range q {
		if f.first > after && f.first <= upto {
			return f.name
		}
	}
	return ""
}
