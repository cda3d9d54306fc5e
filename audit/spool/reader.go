package spool

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Reader reads a spool's records in sequence order, from what the writer
// has written and fsynced so far (a record is never shipped before it is
// durable); the shipper uses one. A Reader is not safe for
// concurrent use.
type Reader struct {
	s    *Spool
	next uint64 // the next sequence number wanted
	name string // the segment being read ("" to look one up)
	off  int64  // the offset of the next frame in it
}

// NewReader returns a Reader of the records after sequence number after.
func (s *Spool) NewReader(after uint64) *Reader {
	return &Reader{s: s, next: after + 1}
}

// Read returns up to max records that follow the last one returned (none
// when nothing new was written). A segment that turns out to be corrupt
// while read is skipped, with the error returned beside the records read.
func (r *Reader) Read(max int) ([]Record, error) {
	var out []Record
	for len(out) < max {
		r.s.mu.Lock()
		segs := append([]segment(nil), r.s.segs...)
		active := r.s.active
		r.s.mu.Unlock()
		idx := -1
		if r.name != "" {
			for i, sg := range segs {
				if sg.name == r.name {
					idx = i
					break
				}
			}
			if idx < 0 { // removed under us: look the next one up
				r.name = ""
			}
		}
		if r.name == "" {
			for i, sg := range segs {
				if sg.count > 0 && sg.last >= r.next {
					idx = i
					break
				}
			}
			if idx < 0 {
				return out, nil
			}
			r.name, r.off = segs[idx].name, 0
		}
		sg := segs[idx]
		isActive := active && idx == len(segs)-1
		// Only what is fsynced is read: a record shipped and then lost in
		// a crash would leave the cursor past the end of the local chain.
		sg.size = sg.synced
		if r.off < sg.size {
			recs, err := r.readSegment(sg, max-len(out))
			out = append(out, recs...)
			if err != nil {
				r.moveOn(segs, idx)
				return out, err
			}
			if len(out) >= max {
				return out, nil
			}
		}
		if r.off >= sg.size {
			if isActive || idx == len(segs)-1 {
				return out, nil
			}
			r.moveOn(segs, idx)
		}
	}
	return out, nil
}

func (r *Reader) moveOn(segs []segment, idx int) {
	if idx+1 < len(segs) {
		r.name, r.off = segs[idx+1].name, 0
		if segs[idx+1].count > 0 && segs[idx+1].first > r.next {
			r.next = segs[idx+1].first
		}
		return
	}
	r.name = ""
}

func (r *Reader) readSegment(sg segment, max int) ([]Record, error) {
	f, err := os.Open(filepath.Join(r.s.cfg.Dir, sg.name))
	if err != nil {
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	defer f.Close()
	var out []Record
	sr := io.NewSectionReader(f, r.off, sg.size-r.off)
	_, err = scanFrames(sr, r.off, sg.size-r.off, func(rec Record, off, end int64) error {
		if len(out) >= max {
			return errStop
		}
		r.off = end
		if rec.Seq < r.next {
			return nil
		}
		r.next = rec.Seq + 1
		out = append(out, rec)
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return out, fmt.Errorf("audit spool: reading %s: %w", sg.name, err)
	}
	return out, nil
}

// ReadDir reads a spool folder offline and calls fn with every record of
// every segment in sequence order (quarantined segments are not read). A
// segment whose framing breaks is read up to the break; the breaks are
// returned, joined, after the rest was read. fn's error stops the read.
func ReadDir(dir string, fn func(Record) error) error {
	l, err := listDir(dir)
	if err != nil {
		return err
	}
	var breaks []error
	for _, sf := range l.segments {
		f, err := os.Open(filepath.Join(dir, sf.name))
		if err != nil {
			return fmt.Errorf("audit spool: %w", err)
		}
		_, err = scanFrames(f, 0, sf.size, func(rec Record, _, _ int64) error { return fn(rec) })
		f.Close()
		var fe *FrameError
		switch {
		case err == nil:
		case errors.As(err, &fe):
			breaks = append(breaks, fmt.Errorf("audit spool: %s: %w", sf.name, fe))
		default:
			return err
		}
	}
	return errors.Join(breaks...)
}
