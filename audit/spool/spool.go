package spool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
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
	DefaultCheckpointInterval = 5 * time.Second
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
	// CheckpointKeyID names the seal secret CheckpointKey comes from
	// (secret.KeyID); each checkpoint carries it as key_id, so that after
	// a rotation the right secret checks it.
	CheckpointKeyID string
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

	losses   *lossTracker
	nextHint atomic.Uint64 // the writer's next sequence number, for loss records

	anchorMu sync.Mutex // serializes the cursor file's updates
	anchor   Anchor     // what the cursor file holds

	mu          sync.Mutex // guards what readers and Stats see
	segs        []segment  // the last one is the active segment when active is true
	active      bool
	shipped     uint64
	quarantined int

	writerState // the writer goroutine's alone (writer.go)
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

// pending is one record on its way into a segment: an event, with the
// receipt to settle, or one of the spool's own records.
type pending struct {
	e      *Entry
	settle func(error) // nil for the spool's own records
	loss   *lossTally  // a loss record's tally, put back when it is not written
	err    error       // set by write when the entry cannot be encoded
}

// own wraps the spool's own records for write.
func own(ents ...Entry) []pending {
	ps := make([]pending, len(ents))
	for i := range ents {
		ps[i] = pending{e: &ents[i]}
	}
	return ps
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
		return fmt.Errorf("audit spool: close with %d events still queued: %w", s.Queued(), ctx.Err())
	}
}

// Notify returns a channel that receives after new records were written.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Stats returns the spool's state (OldestPending and ExportFailures are
// the shipper's, and zero here).
func (s *Spool) Stats() audit.SpoolStats {
	st := audit.SpoolStats{Lost: s.losses.counts()}
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

// Queued returns the number of events waiting to be written (Close names
// it when the writer does not finish in time).
func (s *Spool) Queued() int { return int(s.queued.Load()) }
