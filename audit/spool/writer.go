package spool

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// writerState is what only the writer goroutine (and Open, before it
// starts) touches: the active segment, the chain's head, the receipts
// waiting for an fsync, the checkpoint cadence and the free-space estimate.
type writerState struct {
	f            File
	nextSeq      uint64
	head         [32]byte
	buf          []byte
	waiting      []func(error)
	dirty        bool
	writeErr     error // an fsync that failed during the current write
	sinceCkpt    int
	lastCkpt     time.Time
	free         uint64
	freeAt       time.Time
	writtenSince uint64
	low          bool
	lastLossRec  time.Time
	startEntries []Entry
	ckptDue      *Anchor // a checkpoint written, to be anchored once fsynced
}

// CheckpointMAC is the MAC a checkpoint record carries: HMAC-SHA256 keyed
// with the audit checkpoint key over "vramseal audit checkpoint v1", 0x00,
// the checkpoint's sequence number (uint64 big-endian) and the chain head it
// closes (the previous record's hash).
func CheckpointMAC(key []byte, seq uint64, head [32]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("vramseal audit checkpoint v1\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	m.Write(b[:])
	m.Write(head[:])
	return m.Sum(nil)
}

func (s *Spool) checkpointEntry() Entry {
	return Entry{Name: NameCheckpoint, Severity: audit.SeverityInfo, ID: audit.NewID(), Time: s.cfg.Now(), WorkerID: s.cfg.WorkerID,
		Fields: []audit.Field{{Key: "hmac", Value: ""}}}
}

// write appends records to the active segment, in as few writes as the
// segment size allows (a segment is closed, with a checkpoint, once it
// reaches SegmentBytes). On a failed write the segment is cut back and the
// chain state left as it was before that write; it returns how many
// records (from the front) were taken: written, or skipped with their err
// set because they cannot be encoded.
func (s *Spool) write(ps []pending) (int, error) {
	done := 0
	for done < len(ps) {
		n, err := s.writeChunk(ps[done:])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeChunk writes the records that fit the active segment (at least
// one) and returns how many it took from the front. A record that cannot
// be encoded is skipped, with its err set, so it is lost on its own and
// never takes the others down with it.
func (s *Spool) writeChunk(ps []pending) (int, error) {
	if err := s.ensureActive(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	size := s.segs[len(s.segs)-1].size
	s.mu.Unlock()
	s.buf = s.buf[:0]
	seq, head := s.nextSeq, s.head
	n, taken := 0, 0
	var ckpt *Anchor
	for i := range ps {
		if n > 0 && size+int64(len(s.buf)) >= s.cfg.SegmentBytes {
			break
		}
		p := &ps[i]
		if p.e.Name == NameCheckpoint && len(s.cfg.CheckpointKey) > 0 {
			p.e.Fields = []audit.Field{{Key: "hmac", Value: hex.EncodeToString(CheckpointMAC(s.cfg.CheckpointKey, seq, head))}}
			if s.cfg.CheckpointKeyID != "" {
				p.e.Fields = append(p.e.Fields, audit.Field{Key: "key_id", Value: s.cfg.CheckpointKeyID})
			}
		}
		var err error
		var h [32]byte
		s.buf, h, err = appendFrame(s.buf, seq, head, p.e)
		taken++
		if err != nil {
			p.err = fmt.Errorf("%w: encoding %s: %w", ErrWrite, p.e.Name, err)
			continue
		}
		if p.e.Name == NameCheckpoint {
			ckpt = &Anchor{CheckpointSeq: seq, CheckpointHash: h}
		}
		seq, head = seq+1, h
		n++
	}
	if n == 0 {
		return taken, nil
	}
	if _, err := s.f.Write(s.buf); err != nil {
		if terr := s.f.Truncate(size); terr != nil {
			// The file now ends in a partial record: close it; the
			// next start truncates it, the next write opens a new one.
			s.log.WithError(terr).Error("audit spool: cannot cut a failed write back; closing the segment")
			s.closeActive()
		}
		return 0, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	s.mu.Lock()
	a := &s.segs[len(s.segs)-1]
	if a.count == 0 {
		a.first = s.nextSeq
	}
	a.count += n
	a.last = seq - 1
	a.size += int64(len(s.buf))
	size = a.size
	s.mu.Unlock()
	s.nextSeq, s.head = seq, head
	s.nextHint.Store(seq)
	s.writtenSince += uint64(len(s.buf))
	s.sinceCkpt += n
	s.dirty = true
	if ckpt != nil {
		s.ckptDue = ckpt
	}
	if n == 1 && taken == 1 && ps[0].e.Name == NameCheckpoint {
		s.sinceCkpt = 0
		s.lastCkpt = s.cfg.Now()
	}
	select {
	case s.notify <- struct{}{}:
	default:
	}
	if size >= s.cfg.SegmentBytes {
		s.rotate()
	}
	return taken, nil
}

func (s *Spool) ensureActive() error {
	if s.f != nil {
		return nil
	}
	name := segmentName(s.nextSeq)
	path := filepath.Join(s.cfg.Dir, name)
	f, err := s.cfg.OpenSegment(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	if err := syncDir(s.cfg.Dir); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	s.f = f
	s.mu.Lock()
	s.segs = append(s.segs, segment{name: name, first: s.nextSeq, created: s.cfg.Now()})
	s.active = true
	s.mu.Unlock()
	return nil
}

// rotate closes the active segment with a checkpoint; the next write opens
// a new one.
func (s *Spool) rotate() {
	if s.f == nil {
		return
	}
	if s.sinceCkpt > 0 {
		f := s.f
		if _, err := s.write(own(s.checkpointEntry())); err != nil {
			s.log.WithError(err).Error("audit spool: writing the checkpoint that closes a segment")
		}
		if s.f != f { // the write rotated already
			return
		}
	}
	s.closeActive()
}

// closeActive fsyncs (when dirty) and closes the active segment. A failed
// fsync settles the waiting receipts with the error and is kept in
// writeErr for the records of a batch being written, whose receipts are
// not waiting yet.
func (s *Spool) closeActive() {
	if s.f == nil {
		return
	}
	if err := s.sync(); err != nil {
		s.writeErr = err
	}
	if err := s.f.Close(); err != nil {
		s.log.WithError(err).Error("audit spool: closing a segment")
	}
	s.f = nil
	s.mu.Lock()
	s.active = false
	if n := len(s.segs); n > 0 {
		// Closed: nothing more will be written or fsynced here; readers
		// take it whole (a failed fsync was reported to the receipts).
		s.segs[n-1].synced = s.segs[n-1].size
	}
	if n := len(s.segs); n > 0 && s.segs[n-1].count == 0 {
		// Never written: nothing to keep.
		_ = os.Remove(filepath.Join(s.cfg.Dir, s.segs[n-1].name))
		s.segs = s.segs[:n-1]
	}
	s.mu.Unlock()
}

// sync fsyncs the active segment and settles every waiting receipt; it
// returns the fsync's error.
func (s *Spool) sync() error {
	if !s.dirty && len(s.waiting) == 0 {
		return nil
	}
	var err error
	if s.f != nil && s.dirty {
		if err = s.f.Sync(); err != nil {
			s.log.WithError(err).Error("audit spool: fsync failed")
			err = fmt.Errorf("%w: fsync: %w", ErrWrite, err)
		} else {
			s.mu.Lock()
			if n := len(s.segs); n > 0 && s.active {
				s.segs[n-1].synced = s.segs[n-1].size
			}
			s.mu.Unlock()
			select { // readers ship only what is durable: now there is more
			case s.notify <- struct{}{}:
			default:
			}
		}
	}
	s.dirty = false
	for _, settle := range s.waiting {
		settle(err)
	}
	clear(s.waiting)
	s.waiting = s.waiting[:0]
	if a := s.ckptDue; a != nil && s.f != nil {
		s.ckptDue = nil
		if err == nil { // only a durable checkpoint is an anchor
			s.anchorCheckpoint(a.CheckpointSeq, a.CheckpointHash)
		}
	}
	return err
}

// run is the writer goroutine.
func (s *Spool) run() {
	defer close(s.done)
	defer s.lock.Close() // before done: an Open after Close finds the folder free
	commit := time.NewTimer(time.Hour)
	commit.Stop()
	armed := false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	lastRetention := time.Time{}
	batch := make([]item, 0, 1024)
	for {
		select {
		case it := <-s.queue:
			batch = append(batch[:0], it)
		drain:
			for len(batch) < cap(batch) {
				select {
				case it := <-s.queue:
					batch = append(batch, it)
				default:
					break drain
				}
			}
			s.queued.Add(-int64(len(batch)))
			critical := s.process(batch, false)
			if critical {
				s.sync()
			} else if len(s.waiting) > 0 && !armed {
				commit.Reset(s.cfg.CommitWindow)
				armed = true
			}
		case <-commit.C:
			armed = false
			s.sync()
		case <-tick.C:
			now := s.cfg.Now()
			s.writeOwn(s.lossRecords())
			if s.sinceCkpt > 0 && (s.sinceCkpt >= s.cfg.CheckpointEvery || now.Sub(s.lastCkpt) >= s.cfg.CheckpointInterval) {
				s.writeOwn(own(s.checkpointEntry()))
			}
			s.mu.Lock()
			old := s.active && now.Sub(s.segs[len(s.segs)-1].created) >= s.cfg.SegmentAge && s.segs[len(s.segs)-1].count > 0
			s.mu.Unlock()
			if old {
				s.rotate()
			}
			if now.Sub(lastRetention) >= time.Minute {
				lastRetention = now
				s.applyRetention(now)
			}
			s.sync()
		case <-s.stop:
			for {
				batch = batch[:0]
			more:
				for len(batch) < cap(batch) {
					select {
					case it := <-s.queue:
						batch = append(batch, it)
					default:
						break more
					}
				}
				if len(batch) == 0 {
					break
				}
				s.queued.Add(-int64(len(batch)))
				s.process(batch, true)
			}
			s.writeOwn(s.lossRecords())
			if s.sinceCkpt > 0 {
				s.writeOwn(own(s.checkpointEntry()))
			}
			s.sync()
			s.closeActive()
			return
		}
	}
}

// writeOwn writes the spool's own records, logging a failure; the tallies
// of loss records not written are kept for the next one.
func (s *Spool) writeOwn(ps []pending) {
	if len(ps) == 0 {
		return
	}
	n, err := s.write(ps)
	if err == nil {
		return
	}
	s.log.WithError(err).Error("audit spool: writing the spool's own records")
	for _, p := range ps[n:] {
		if p.loss != nil {
			s.losses.putBack(*p.loss)
		}
	}
}

// process writes one batch of queued events, after the loss records due;
// it reports whether records of a batch holding a CRITICAL event were
// written (and must be fsynced now).
func (s *Spool) process(batch []item, closing bool) bool {
	s.checkFree()
	now := s.cfg.Now()
	var recs []pending
	if now.Sub(s.lastLossRec) >= time.Second || closing {
		recs = s.lossRecords()
	}
	nLoss := len(recs)
	critical := false
	for i := range batch {
		it := &batch[i]
		if s.low && !it.critical {
			s.lose(it.e.Name, audit.LossDiskFull, 1) // counted before the receipt says so
			it.settle(ErrDiskFull)
			continue
		}
		critical = critical || it.critical
		recs = append(recs, pending{e: &it.e, settle: it.settle})
	}
	if len(recs) == 0 {
		return false
	}
	s.writeErr = nil
	n, err := s.write(recs)
	// A segment closed during this write whose fsync failed holds records
	// of this batch: their receipts report that, never nil.
	werr := s.writeErr
	s.writeErr = nil
	reason, rerr := audit.LossWriteError, ErrWrite
	if errors.Is(err, syscall.ENOSPC) {
		reason, rerr = audit.LossDiskFull, ErrDiskFull
		s.low = s.cfg.MinFreeBytes > 0
		s.freeAt = time.Time{}
	}
	for i := range recs {
		p := &recs[i]
		switch {
		case p.err != nil && p.settle != nil: // cannot be recorded: lost on its own
			s.log.WithError(p.err).Error("audit spool: an event cannot be recorded")
			s.lose(p.e.Name, audit.LossWriteError, 1)
			p.settle(p.err)
		case p.err != nil:
			s.log.WithError(p.err).Error("audit spool: a record of the spool's own cannot be encoded")
		case i >= n && p.loss != nil: // not written: kept for the next loss record
			s.losses.putBack(*p.loss)
		case i >= n:
			s.lose(p.e.Name, reason, 1)
			p.settle(fmt.Errorf("%w: %w", rerr, err))
		case p.settle == nil: // one of the spool's own, written
		case werr != nil:
			p.settle(werr)
		default:
			s.waiting = append(s.waiting, p.settle)
		}
	}
	if err != nil {
		return critical && n > nLoss
	}
	if nLoss > 0 {
		s.lastLossRec = now
	}
	return critical
}

// checkFree refreshes the free-space estimate: statfs at most every 100 ms
// when the estimate comes near the minimum, otherwise every second.
func (s *Spool) checkFree() {
	if s.cfg.MinFreeBytes == 0 {
		return
	}
	now := s.cfg.Now()
	est := uint64(0)
	if s.free > s.writtenSince {
		est = s.free - s.writtenSince
	}
	near := est < s.cfg.MinFreeBytes+4<<20
	age := now.Sub(s.freeAt)
	if age < time.Second && !(near && age >= 100*time.Millisecond) {
		s.low = est < s.cfg.MinFreeBytes
		return
	}
	free, err := s.cfg.FreeBytes(s.cfg.Dir)
	s.freeAt = now
	s.writtenSince = 0
	if err != nil {
		s.log.WithError(err).Warn("audit spool: cannot read free disk space")
		return
	}
	wasLow := s.low
	s.free = free
	s.low = free < s.cfg.MinFreeBytes
	if s.low != wasLow {
		if s.low {
			s.log.WithFields(logrus.Fields{logfield.FreeBytes: free, logfield.MinFreeBytes: s.cfg.MinFreeBytes}).Error("audit spool: disk nearly full; only CRITICAL events are kept")
		} else {
			s.log.WithField(logfield.FreeBytes, free).Info("audit spool: disk space back; keeping every event again")
		}
	}
}

// applyRetention deletes closed segments that are shipped and older than
// the retention, never the newest: the chain's end stays on disk for the
// anchor to be checked against.
func (s *Spool) applyRetention(now time.Time) {
	s.mu.Lock()
	var del []string
	keep := s.segs[:0]
	for i, sg := range s.segs {
		newest := i == len(s.segs)-1 // active, or the chain's end the anchor is checked against
		if !newest && sg.count > 0 && sg.last <= s.shipped && now.Sub(sg.created) >= s.cfg.Retention {
			del = append(del, sg.name)
			continue
		}
		keep = append(keep, sg)
	}
	s.segs = keep
	s.mu.Unlock()
	for _, name := range del {
		if err := os.Remove(filepath.Join(s.cfg.Dir, name)); err != nil {
			s.log.WithError(err).Warn("audit spool: removing a shipped segment")
		}
	}
}
