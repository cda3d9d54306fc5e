package spool

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
)

// Defaults of Config.
const (
	DefaultSegmentBytes       = 64 << 20
	DefaultSegmentAge         = time.Hour
	DefaultRetention          = 2160 * time.Hour
	DefaultQueueSize          = 16384
	DefaultCriticalReserve    = 256
	DefaultCommitWindow       = 200 * time.Millisecond
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 30 * time.Second
)

// Errors a Receipt of the spool can report.
var (
	ErrQueueFull = errors.New("audit spool: queue full, event lost")
	ErrDiskFull  = errors.New("audit spool: free disk space below the minimum, event lost")
	ErrWrite     = errors.New("audit spool: write failed, event lost")
	// ErrInUse: another spool (another agent) has the folder open.
	ErrInUse = errors.New("audit spool: the folder is in use by another process")
)

// File is what the spool writes a segment through. *os.File implements it;
// tests inject one that fails.
type File interface {
	io.Writer
	Sync() error
	Truncate(size int64) error
	Close() error
}

// Config configures a Spool. Dir is required; zero values take the defaults.
type Config struct {
	// Dir holds the segment files and the cursor (created 0700 if missing).
	Dir string
	// SegmentBytes: a segment is closed once it reaches this size.
	SegmentBytes int64
	// SegmentAge: a segment is closed once it is this old (and not empty).
	SegmentAge time.Duration
	// Retention: a closed segment is deleted once every record in it has
	// been shipped and it is older than this. Unshipped segments are never
	// deleted.
	Retention time.Duration
	// MinFreeBytes: while the file system holding Dir has less free space,
	// only CRITICAL events (and the spool's own small records) are written;
	// the rest are lost with reason disk_full. 0 turns the check off.
	MinFreeBytes uint64
	// CheckpointKey keys the checkpoint HMACs (derived from the seal
	// secret under secret.LabelAuditCheckpoint). Without it checkpoints
	// carry an empty MAC.
	CheckpointKey []byte
	// CheckpointEvery and CheckpointInterval: a checkpoint record is
	// written after this many records or this much time, whichever comes
	// first, when anything was written since the last one; also before a
	// segment is closed and on Close.
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// QueueSize bounds the events waiting to be written; the last
	// CriticalReserve places are kept for CRITICAL events.
	QueueSize       int
	CriticalReserve int
	// CommitWindow is the longest a non-CRITICAL record waits before it
	// is fsynced (group commit). CRITICAL records are fsynced at once.
	CommitWindow time.Duration
	// WorkerID is put on the spool's own records.
	WorkerID string
	// Logger is the operational log.
	Logger logrus.FieldLogger
	// OnFailure is called for every event the spool loses or cannot make
	// durable, with the event's name.
	OnFailure func(name string)
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// OpenSegment creates a segment file for appending (an O_APPEND
	// *os.File with mode 0600 when nil).
	OpenSegment func(path string) (File, error)
	// FreeBytes reports the free space of the file system holding dir
	// (statfs when nil).
	FreeBytes func(dir string) (uint64, error)
}

func (c *Config) defaults() error {
	if c.Dir == "" {
		return errors.New("audit spool: no directory")
	}
	positiveOr(&c.SegmentBytes, DefaultSegmentBytes)
	positiveOr(&c.SegmentAge, DefaultSegmentAge)
	positiveOr(&c.Retention, DefaultRetention)
	positiveOr(&c.QueueSize, DefaultQueueSize)
	positiveOr(&c.CriticalReserve, DefaultCriticalReserve)
	if c.CriticalReserve >= c.QueueSize {
		return fmt.Errorf("audit spool: critical reserve %d must be smaller than the queue size %d", c.CriticalReserve, c.QueueSize)
	}
	positiveOr(&c.CommitWindow, DefaultCommitWindow)
	positiveOr(&c.CheckpointEvery, DefaultCheckpointEvery)
	positiveOr(&c.CheckpointInterval, DefaultCheckpointInterval)
	if c.Logger == nil {
		c.Logger = logrus.StandardLogger()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.OpenSegment == nil {
		c.OpenSegment = func(path string) (File, error) {
			return os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		}
	}
	if c.FreeBytes == nil {
		c.FreeBytes = statfsFree
	}
	return nil
}

// positiveOr sets *v to def unless it is positive.
func positiveOr[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}

// Spool is the durable local audit log: an append-only hash chain of
// records in segment files, written by one goroutine from a bounded queue.
// Append is safe for concurrent use and never blocks; readers (the shipper)
// read what has been written and fsynced; Ack moves the shipped cursor.
type Spool struct {
	cfg  Config
	log  logrus.FieldLogger
	lock *os.File // holds the folder's lock while the writer runs

	closeMu sync.RWMutex // held for reading by Append, for writing by Close
	closed  bool
	queue   chan item
	queued  atomic.Int64
	stop    chan struct{}
	done    chan struct{}
	notify  chan struct{}

	lost     [3]atomic.Uint64 // by audit.LossReasons() index
	lossMu   sync.Mutex
	pendLoss map[string]*lossAcc
	lossLog  map[string]time.Time
	nextHint atomic.Uint64 // the writer's next sequence number, for loss records

	mu          sync.Mutex // guards what readers and Stats see
	segs        []segment  // the last one is the active segment when active is true
	active      bool
	shipped     uint64
	quarantined int

	// writer goroutine only
	f              File
	nextSeq        uint64
	head           [32]byte
	buf            []byte
	waiting        []func(error)
	dirty          bool
	writeErr       error            // an fsync that failed during the current write
	unencodable    map[*Entry]error // entries write skipped: they cannot be recorded
	sinceCkpt      int
	lastCkpt       time.Time
	free           uint64
	freeAt         time.Time
	writtenSince   uint64
	low            bool
	lastLossRecord time.Time
	startEntries   []Entry
}

type segment struct {
	name    string
	first   uint64
	last    uint64
	count   int
	size    int64
	synced  int64 // bytes fsynced: what readers may ship
	created time.Time
}

type item struct {
	e        Entry
	critical bool
	settle   func(error)
}

type lossAcc struct {
	count    uint64
	firstSeq uint64
	first    time.Time
	last     time.Time
}

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
		cfg:      cfg,
		log:      cfg.Logger.WithField("component", "audit-spool"),
		queue:    make(chan item, cfg.QueueSize),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		notify:   make(chan struct{}, 1),
		pendLoss: map[string]*lossAcc{},
		lossLog:  map[string]time.Time{},
		nextSeq:  1,

		unencodable: map[*Entry]error{},
		lock:        lock,
	}
	if err := s.recover(); err != nil {
		return nil, err
	}
	s.nextHint.Store(s.nextSeq)
	s.lastCkpt = cfg.Now()
	// The repair records go first, durably, before any new event.
	if len(s.startEntries) > 0 {
		ents := make([]*Entry, len(s.startEntries))
		for i := range s.startEntries {
			ents[i] = &s.startEntries[i]
		}
		if _, err := s.write(ents); err != nil {
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
	if c, err := readCursor(dir); err != nil {
		s.log.WithError(err).Warn("audit spool cursor unreadable; shipping starts again from the oldest record (the collector sees duplicates with the same log.record.uid)")
	} else {
		s.shipped = c
	}
	l, err := listDir(dir)
	if err != nil {
		return err
	}
	s.quarantined = len(l.quarantined)
	var lastGood uint64
	var lastHash [32]byte
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
			s.segs = append(s.segs, segment{name: sf.name, first: sum.first, last: sum.last, count: sum.count, size: sf.size, synced: sf.size, created: s.cfg.Now()})
			lastGood, lastHash = sum.last, sum.lastHash
			continue
		}
		fe := sum.frameErr
		if fe.Torn && (isLast || fe.Short) {
			// A crash in the middle of a write (or a failed write that
			// could not be cut back): cut the torn record off.
			if err := truncateFile(path, sum.goodEnd); err != nil {
				return err
			}
			s.log.WithFields(logrus.Fields{"file": sf.name, "offset": fe.Offset, "bytes": sf.size - sum.goodEnd}).Warn("audit spool: torn last record truncated")
			s.startEntries = append(s.startEntries, s.repairEntry(RepairTruncated, sf.name, fe.Offset, sf.size-sum.goodEnd, sum.last, fe.Error()))
			if sum.count > 0 {
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
		s.log.WithFields(logrus.Fields{"file": sf.name, "quarantined_as": qname, "offset": fe.Offset, "reason": fe.Reason}).Error("audit spool: corrupt segment quarantined")
		if sum.count > 0 && isLast {
			lastGood, lastHash = sum.last, sum.lastHash
		}
		s.startEntries = append(s.startEntries, s.repairEntry(RepairQuarantined, qname, fe.Offset, sf.size, sum.last, fe.Error()))
	}
	s.nextSeq = max(lastGood, s.shipped) + 1
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

// Append queues e to be written and returns at once. A CRITICAL entry
// (critical true) may use the reserved part of the queue and is fsynced as
// soon as it is written; the Receipt settles when the record is durable, or
// with the reason it will not be (ErrQueueFull, ErrDiskFull, ErrWrite,
// audit.ErrClosed).
func (s *Spool) Append(e Entry, critical bool) audit.Receipt {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		s.failed(e.Name)
		return audit.Settled(audit.ErrClosed)
	}
	limit := int64(s.cfg.QueueSize - s.cfg.CriticalReserve)
	if critical {
		limit = int64(s.cfg.QueueSize)
	}
	if s.queued.Add(1) > limit {
		s.queued.Add(-1)
		s.lose(e.Name, audit.LossQueueFull, 1)
		return audit.Settled(ErrQueueFull)
	}
	r, settle := audit.NewReceipt()
	s.queue <- item{e: e, critical: critical, settle: settle}
	return r
}

func (s *Spool) failed(name string) {
	if s.cfg.OnFailure != nil {
		s.cfg.OnFailure(name)
	}
}

// lose counts n lost events of one name, logs (at most every 10 s per
// reason) and remembers the loss for a loss record.
func (s *Spool) lose(name, reason string, n uint64) {
	s.lost[reasonIndex(reason)].Add(n)
	for i := uint64(0); i < n; i++ {
		s.failed(name)
	}
	now := s.cfg.Now()
	s.lossMu.Lock()
	acc := s.pendLoss[reason]
	if acc == nil {
		acc = &lossAcc{firstSeq: s.nextHint.Load(), first: now}
		s.pendLoss[reason] = acc
	}
	acc.count += n
	acc.last = now
	logIt := now.Sub(s.lossLog[reason]) >= 10*time.Second
	if logIt {
		s.lossLog[reason] = now
	}
	s.lossMu.Unlock()
	if logIt {
		s.log.WithFields(logrus.Fields{"event": audit.NamePrefix + name, "reason": reason, "lost_total": s.lost[reasonIndex(reason)].Load()}).Error("audit events lost")
	}
}

func reasonIndex(reason string) int {
	switch reason {
	case audit.LossQueueFull:
		return 0
	case audit.LossDiskFull:
		return 1
	}
	return 2
}

// takeLossEntries turns the pending losses into loss records.
func (s *Spool) takeLossEntries() []Entry {
	s.lossMu.Lock()
	defer s.lossMu.Unlock()
	if len(s.pendLoss) == 0 {
		return nil
	}
	var out []Entry
	for _, reason := range audit.LossReasons() {
		acc := s.pendLoss[reason]
		if acc == nil {
			continue
		}
		out = append(out, Entry{
			Name: NameLoss, Severity: audit.SeverityError, ID: audit.NewID(), Time: s.cfg.Now(), WorkerID: s.cfg.WorkerID,
			Fields: []audit.Field{
				{Key: "reason", Value: reason},
				{Key: "count", Value: acc.count},
				{Key: "first_seq", Value: acc.firstSeq},
				{Key: "first_lost_at", Value: acc.first.UTC().Format(time.RFC3339Nano)},
				{Key: "last_lost_at", Value: acc.last.UTC().Format(time.RFC3339Nano)},
			},
		})
		delete(s.pendLoss, reason)
	}
	return out
}

// putBackLoss returns loss records that could not be written.
func (s *Spool) putBackLoss(ents []Entry) {
	s.lossMu.Lock()
	defer s.lossMu.Unlock()
	for _, e := range ents {
		reason, _ := e.Field("reason").(string)
		n, _ := e.Field("count").(uint64)
		first, _ := e.Field("first_seq").(uint64)
		acc := s.pendLoss[reason]
		if acc == nil {
			acc = &lossAcc{firstSeq: first, first: e.Time, last: e.Time}
			s.pendLoss[reason] = acc
		}
		acc.count += n
		acc.firstSeq = min(acc.firstSeq, first)
	}
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

// write appends entries to the active segment, in as few writes as the
// segment size allows (a segment is closed, with a checkpoint, once it
// reaches SegmentBytes). On a failed write the segment is cut back and the
// chain state left as it was before that write; it returns how many
// entries (from the front) were written.
func (s *Spool) write(ents []*Entry) (int, error) {
	done := 0
	for done < len(ents) {
		n, err := s.writeChunk(ents[done:])
		done += n
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

// writeChunk writes the entries that fit the active segment (at least
// one) and returns how many it took from the front. An entry that cannot
// be encoded is skipped, with its error in s.unencodable, so it is lost on
// its own and never takes the others down with it.
func (s *Spool) writeChunk(ents []*Entry) (int, error) {
	if err := s.ensureActive(); err != nil {
		return 0, err
	}
	s.mu.Lock()
	size := s.segs[len(s.segs)-1].size
	s.mu.Unlock()
	s.buf = s.buf[:0]
	seq, head := s.nextSeq, s.head
	n, taken := 0, 0
	for _, e := range ents {
		if n > 0 && size+int64(len(s.buf)) >= s.cfg.SegmentBytes {
			break
		}
		if e.Name == NameCheckpoint && len(s.cfg.CheckpointKey) > 0 {
			e.Fields = []audit.Field{{Key: "hmac", Value: hex.EncodeToString(CheckpointMAC(s.cfg.CheckpointKey, seq, head))}}
		}
		var err error
		var h [32]byte
		s.buf, h, err = appendFrame(s.buf, seq, head, e)
		taken++
		if err != nil {
			s.unencodable[e] = fmt.Errorf("%w: encoding %s: %w", ErrWrite, e.Name, err)
			continue
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
	if n == 1 && taken == 1 && ents[0].Name == NameCheckpoint {
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
		e := s.checkpointEntry()
		f := s.f
		if _, err := s.write([]*Entry{&e}); err != nil {
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
			if ls := s.takeLossEntries(); len(ls) > 0 {
				s.writeOwn(ls)
			}
			if s.sinceCkpt > 0 && (s.sinceCkpt >= s.cfg.CheckpointEvery || now.Sub(s.lastCkpt) >= s.cfg.CheckpointInterval) {
				s.writeOwn([]Entry{s.checkpointEntry()})
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
			if ls := s.takeLossEntries(); len(ls) > 0 {
				s.writeOwn(ls)
			}
			if s.sinceCkpt > 0 {
				s.writeOwn([]Entry{s.checkpointEntry()})
			}
			s.sync()
			s.closeActive()
			return
		}
	}
}

// writeOwn writes the spool's own records, logging a failure.
func (s *Spool) writeOwn(ents []Entry) {
	ps := make([]*Entry, len(ents))
	for i := range ents {
		ps[i] = &ents[i]
	}
	if n, err := s.write(ps); err != nil {
		s.log.WithError(err).Error("audit spool: writing the spool's own records")
		var losses []Entry
		for _, e := range ents[n:] {
			if e.Name == NameLoss {
				losses = append(losses, e)
			}
		}
		s.putBackLoss(losses)
	}
}

// process writes one batch; it reports whether the batch held a CRITICAL
// record (which must be fsynced now).
func (s *Spool) process(batch []item, closing bool) bool {
	s.checkFree()
	ents := make([]*Entry, 0, len(batch)+3)
	settles := make([]func(error), 0, len(batch))
	now := s.cfg.Now()
	var losses []Entry
	if now.Sub(s.lastLossRecord) >= time.Second || closing {
		losses = s.takeLossEntries()
		for i := range losses {
			ents = append(ents, &losses[i])
		}
	}
	critical := false
	for i := range batch {
		it := &batch[i]
		if s.low && !it.critical {
			s.lose(it.e.Name, audit.LossDiskFull, 1) // counted before the receipt says so
			it.settle(ErrDiskFull)
			continue
		}
		critical = critical || it.critical
		ents = append(ents, &it.e)
		settles = append(settles, it.settle)
	}
	if len(ents) == 0 {
		return false
	}
	s.writeErr = nil
	clear(s.unencodable)
	n, err := s.write(ents)
	defer clear(s.unencodable)
	for i := range settles {
		if uerr, bad := s.unencodable[ents[len(losses)+i]]; bad {
			s.log.WithError(uerr).Error("audit spool: an event cannot be recorded")
			s.lose(ents[len(losses)+i].Name, audit.LossWriteError, 1)
			settles[i](uerr)
			settles[i] = nil
		}
	}
	// A segment closed during this write whose fsync failed holds records
	// of this batch: their receipts report that, never nil.
	werr := s.writeErr
	s.writeErr = nil
	if werr != nil {
		nl := min(len(losses), n)
		for i := range settles {
			if nl+i < n && settles[i] != nil {
				settles[i](werr)
				settles[i] = nil
			}
		}
	}
	if err != nil {
		reason, rerr := audit.LossWriteError, ErrWrite
		if errors.Is(err, syscall.ENOSPC) {
			reason, rerr = audit.LossDiskFull, ErrDiskFull
			s.low = s.cfg.MinFreeBytes > 0
			s.freeAt = time.Time{}
		}
		nl := len(losses)
		if n < nl {
			s.putBackLoss(losses[n:])
		}
		for i := range settles {
			if nl+i < n {
				if settles[i] != nil {
					s.waiting = append(s.waiting, settles[i]) // written before the failure
				}
				continue
			}
			if settles[i] == nil {
				continue // already lost on its own
			}
			s.lose(ents[nl+i].Name, reason, 1)
			settles[i](fmt.Errorf("%w: %w", rerr, err))
		}
		if n > nl && critical {
			return true
		}
		return false
	}
	if len(losses) > 0 {
		s.lastLossRecord = now
	}
	for _, settle := range settles {
		if settle != nil {
			s.waiting = append(s.waiting, settle)
		}
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
			s.log.WithFields(logrus.Fields{"free_bytes": free, "min_free_bytes": s.cfg.MinFreeBytes}).Error("audit spool: disk nearly full; only CRITICAL events are kept")
		} else {
			s.log.WithField("free_bytes", free).Info("audit spool: disk space back; keeping every event again")
		}
	}
}

// applyRetention deletes closed segments that are shipped and older than
// the retention.
func (s *Spool) applyRetention(now time.Time) {
	s.mu.Lock()
	var del []string
	keep := s.segs[:0]
	for i, sg := range s.segs {
		isActive := s.active && i == len(s.segs)-1
		if !isActive && sg.count > 0 && sg.last <= s.shipped && now.Sub(sg.created) >= s.cfg.Retention {
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

// Close writes what is queued, a last checkpoint, fsyncs and closes the
// spool. It returns ctx's error if the writer does not finish in time.
// After Close, Append settles at once with audit.ErrClosed.
func (s *Spool) Close(ctx context.Context) error {
	s.closeMu.Lock()
	if !s.closed {
		s.closed = true
		close(s.stop)
	}
	s.closeMu.Unlock()
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("audit spool: close: %w", ctx.Err())
	}
}

// Notify returns a channel that receives after new records were written.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Stats returns the spool's state (OldestPending and ExportFailures are
// the shipper's, and zero here).
func (s *Spool) Stats() audit.SpoolStats {
	st := audit.SpoolStats{Lost: map[string]uint64{}}
	for i, r := range audit.LossReasons() {
		st.Lost[r] = s.lost[i].Load()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sg := range s.segs {
		st.Bytes += sg.size
		if sg.count > 0 {
			st.LastSeq = max(st.LastSeq, sg.last)
		}
	}
	st.ShippedSeq = s.shipped
	if st.LastSeq > s.shipped {
		st.PendingRecords = st.LastSeq - s.shipped
	}
	st.QuarantinedFiles = s.quarantined
	return st
}

// Shipped returns the cursor: the last sequence number the collector took.
func (s *Spool) Shipped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shipped
}

// Ack records that every record up to seq was shipped: the cursor file is
// replaced atomically (temporary file, fsync, rename, fsync of the folder).
func (s *Spool) Ack(seq uint64) error {
	if err := writeCursor(s.cfg.Dir, seq); err != nil {
		return err
	}
	s.mu.Lock()
	if seq > s.shipped {
		s.shipped = seq
	}
	s.mu.Unlock()
	return nil
}

type cursorFile struct {
	ShippedSeq uint64 `json:"shipped_seq"`
}

func readCursor(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, cursorName))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("audit spool cursor: %w", err)
	}
	var c cursorFile
	if err := json.Unmarshal(b, &c); err != nil {
		return 0, fmt.Errorf("audit spool cursor %s: %w", filepath.Join(dir, cursorName), err)
	}
	return c.ShippedSeq, nil
}

func writeCursor(dir string, seq uint64) error {
	b, _ := json.Marshal(cursorFile{ShippedSeq: seq})
	tmp, err := os.CreateTemp(dir, cursorName+".tmp-*")
	if err != nil {
		return fmt.Errorf("audit spool cursor: %w", err)
	}
	_, werr := tmp.Write(append(b, '\n'))
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), filepath.Join(dir, cursorName))
	}
	if werr != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("audit spool cursor: %w", werr)
	}
	return syncDir(dir)
}

// Queued returns the number of events waiting to be written.
func (s *Spool) Queued() int { return int(s.queued.Load()) }
