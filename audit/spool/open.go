package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// Open opens (creating if needed) the spool in cfg.Dir, repairs it (a torn
// last record is truncated, a segment with a corrupt record is quarantined,
// each repair recorded in the spool) and starts its writer.
func Open(cfg Config) (*Spool, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			lock.Close()
		}
	}()
	s := &Spool{
		cfg:         cfg,
		log:         cfg.Logger.WithField(logfield.Component, "audit-spool"),
		queue:       make(chan item, cfg.QueueSize),
		stop:        make(chan struct{}),
		done:        make(chan struct{}),
		notify:      make(chan struct{}, 1),
		losses:      newLossTracker(),
		writerState: writerState{nextSeq: 1},
		lock:        lock,
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	s.nextHint.Store(s.nextSeq)
	s.lastCkpt = cfg.Now()
	// The repair records go first, durably, before any new event.
	if len(s.startEntries) > 0 {
		if _, err := s.write(own(s.startEntries...)); err != nil {
			return nil, fmt.Errorf("audit spool: recording the start-up repair: %w", err)
		}
		if err := s.sync(); err != nil {
			return nil, fmt.Errorf("audit spool: recording the start-up repair: %w", err)
		}
		s.startEntries = nil
	}
	ok = true
	go s.run()
	return s, nil
}

// lockName is the file a Spool holds an exclusive flock on while open.
const lockName = "lock"

// lockDir takes the folder's lock, so that no two spools (two agents with
// the same spool_dir) repair and write one folder at once. The kernel
// drops the lock when the process ends, however it ends.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit spool: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s (is another agent running with the same audit.spool_dir?)", ErrInUse, dir)
		}
		return nil, fmt.Errorf("audit spool: locking %s: %w", dir, err)
	}
	return f, nil
}

// recover scans the folder, repairs it, and sets the chain head.
func (s *Spool) recover() error {
	dir := s.cfg.Dir
	if a, err := ReadAnchor(dir); err != nil {
		s.log.WithError(err).Warn("audit spool cursor unreadable; shipping starts again from the oldest record (the collector sees duplicates with the same log.record.uid)")
	} else {
		s.shipped, s.anchor = a.ShippedSeq, a
	}
	l, err := listDir(dir)
	if err != nil {
		return err
	}
	s.quarantined = len(l.quarantined)
	var lastGood uint64
	var lastHash [32]byte
	var tornSeq uint64       // the sequence number of a torn record cut off the chain's end
	var recorded [][2]uint64 // missing ranges repair records already name
	var prevLast uint64      // the last record of the previous kept segment (0: none)
	gapChecked := true       // false after a quarantine: its repair accounts for the break
	var gaps [][2]uint64     // records missing between two kept segments
	// checkGap notes records missing between two kept segments (a segment
	// file removed); they are reported once, after the scan, unless a
	// repair record (of an earlier start) names them already.
	checkGap := func(sum segSummary) {
		recorded = append(recorded, sum.missing...)
		if prevLast > 0 && gapChecked && sum.count > 0 && sum.first > prevLast+1 {
			gaps = append(gaps, [2]uint64{prevLast + 1, sum.first - 1})
		}
		if sum.count > 0 {
			prevLast, gapChecked = sum.last, true
		}
	}
	for i, sf := range l.segments {
		path := filepath.Join(dir, sf.name)
		isLast := i == len(l.segments)-1
		sum, err := scanSegment(path, sf.first)
		if err != nil {
			return err
		}
		if sum.frameErr == nil {
			if sum.count == 0 {
				// A segment created just before a crash, never written:
				// nothing to keep (a new one is named after the chain).
				if err := os.Remove(path); err != nil {
					return fmt.Errorf("audit spool: %w", err)
				}
				continue
			}
			checkGap(sum)
			s.segs = append(s.segs, segment{name: sf.name, first: sum.first, last: sum.last, count: sum.count, size: sf.size, synced: sf.size, created: s.cfg.Now()})
			lastGood, lastHash = sum.last, sum.lastHash
			tornSeq = 0
			continue
		}
		fe := sum.frameErr
		if fe.Torn && (isLast || fe.Short) {
			// A crash in the middle of a write (or a failed write that
			// could not be cut back): cut the torn record off.
			if err := truncateFile(path, sum.goodEnd); err != nil {
				return err
			}
			s.log.WithFields(logrus.Fields{logfield.File: sf.name, logfield.Offset: fe.Offset, logfield.Bytes: sf.size - sum.goodEnd}).Warn("audit spool: torn last record truncated")
			s.startEntries = append(s.startEntries, s.repairEntry(RepairTruncated, sf.name, fe.Offset, sf.size-sum.goodEnd, sum.last, fe.Error()))
			tornSeq = sf.first + uint64(sum.count)
			if sum.count > 0 {
				checkGap(sum)
				s.segs = append(s.segs, segment{name: sf.name, first: sum.first, last: sum.last, count: sum.count, size: sum.goodEnd, synced: sum.goodEnd, created: s.cfg.Now()})
				lastGood, lastHash = sum.last, sum.lastHash
			} else if err := os.Remove(path); err != nil {
				return fmt.Errorf("audit spool: %w", err)
			}
			continue
		}
		// Corruption inside a segment: keep the file, renamed, and go on
		// from the last good hash with a recorded break.
		qname, err := quarantine(dir, sf.name)
		if err != nil {
			return err
		}
		s.quarantined++
		gapChecked = false
		s.log.WithFields(logrus.Fields{logfield.File: sf.name, "quarantined_as": qname, logfield.Offset: fe.Offset, logfield.Reason: fe.Reason}).Error("audit spool: corrupt segment quarantined")
		if sum.count > 0 && isLast {
			lastGood, lastHash = sum.last, sum.lastHash
		}
		s.startEntries = append(s.startEntries, s.repairEntry(RepairQuarantined, qname, fe.Offset, sf.size, sum.last, fe.Error()))
	}
	for _, g := range gaps {
		if covered(recorded, g[0], g[1]) {
			continue
		}
		s.log.WithFields(logrus.Fields{"first_missing_seq": g[0], "last_missing_seq": g[1]}).
			Error("audit spool: records missing: a segment file was removed from the middle of the spool")
		s.startEntries = append(s.startEntries, s.missingEntry(g[0]-1, g[1], fmt.Sprintf("records %d..%d missing: the segment after seq %d was removed", g[0], g[1], g[0]-1)))
	}
	next := max(lastGood, s.shipped) + 1
	if end := s.anchor.End(); lastGood < end && !(tornSeq == lastGood+1 && end == tornSeq) {
		// The segments end before what the cursor file vouches for:
		// records were removed (or lost with the disk). Say so, and go on
		// after the anchor so no sequence number is used twice.
		s.log.WithFields(logrus.Fields{"first_missing_seq": lastGood + 1, "last_missing_seq": end, "shipped_seq": s.anchor.ShippedSeq, "checkpoint_seq": s.anchor.CheckpointSeq}).
			Error("audit spool: records missing: the spool ends before its anchor (the cursor's shipped sequence or the last checkpoint)")
		s.startEntries = append(s.startEntries, s.missingEntry(lastGood, end,
			fmt.Sprintf("records %d..%d missing: the spool ends at %d, before its anchor (shipped %d, last checkpoint %d)", lastGood+1, end, lastGood, s.anchor.ShippedSeq, s.anchor.CheckpointSeq)))
		next = end + 1
	}
	// A torn record that was the anchored checkpoint itself is accounted
	// for by its truncation record, and its number is used again; but it
	// had been fsynced, which a crash does not undo: say so.
	if tornSeq != 0 && tornSeq == s.anchor.End() {
		s.log.WithFields(logrus.Fields{"seq": tornSeq, "checkpoint_seq": s.anchor.CheckpointSeq}).
			Error("audit spool: the torn last record had been made durable and anchored; a crash does not explain it (see the truncation repair record)")
	}
	s.nextSeq = next
	s.head = lastHash
	if len(s.startEntries) > 0 {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	return nil
}

func (s *Spool) repairEntry(action, file string, offset, bytes int64, lastGoodSeq uint64, detail string) Entry {
	return Entry{
		Name: NameRepair, Severity: audit.SeverityError, ID: audit.NewID(), Time: s.cfg.Now(), WorkerID: s.cfg.WorkerID,
		Fields: []audit.Field{
			{Key: "action", Value: action},
			{Key: "file", Value: file},
			{Key: "offset", Value: offset},
			{Key: "bytes", Value: bytes},
			{Key: "last_good_seq", Value: lastGoodSeq},
			{Key: "detail", Value: detail},
		},
	}
}

// covered reports whether the ranges hold from..to whole.
func covered(ranges [][2]uint64, from, to uint64) bool {
	for _, r := range ranges {
		if r[0] <= from && to <= r[1] {
			return true
		}
	}
	return false
}

// missingEntry is the repair record of records lastGood+1..end missing.
func (s *Spool) missingEntry(lastGood, end uint64, detail string) Entry {
	e := s.repairEntry(RepairMissing, "", 0, 0, lastGood, detail)
	e.Fields = append(e.Fields, audit.Field{Key: "first_missing_seq", Value: lastGood + 1}, audit.Field{Key: "last_missing_seq", Value: end})
	return e
}

func truncateFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("audit spool: truncating %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	return nil
}

func quarantine(dir, name string) (string, error) {
	q := name + quarantineExt
	for i := 1; ; i++ {
		if _, err := os.Lstat(filepath.Join(dir, q)); errors.Is(err, os.ErrNotExist) {
			break
		}
		q = fmt.Sprintf("%s%s.%d", name, quarantineExt, i)
	}
	if err := os.Rename(filepath.Join(dir, name), filepath.Join(dir, q)); err != nil {
		return "", fmt.Errorf("audit spool: quarantining %s: %w", name, err)
	}
	return q, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("audit spool: fsync %s: %w", dir, err)
	}
	return nil
}
