package spool

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// lossTally is what the spool knows of the events lost for one reason
// since the last loss record was written.
type lossTally struct {
	reason   string
	count    uint64
	firstSeq uint64    // the sequence number the first of them would have had
	first    time.Time // when the first was lost
	last     time.Time // when the last was lost
}

// merge adds o's losses to t, keeping the earliest first and the latest
// last time.
func (t *lossTally) merge(o lossTally) {
	t.count += o.count
	t.firstSeq = min(t.firstSeq, o.firstSeq)
	if o.first.Before(t.first) {
		t.first = o.first
	}
	if o.last.After(t.last) {
		t.last = o.last
	}
}

// lossTracker counts lost events, logs them (at most every 10 s per
// reason) and keeps a tally per reason until a loss record carries it. It
// is safe for concurrent use: Append loses events as the writer does.
type lossTracker struct {
	lost [3]atomic.Uint64 // by audit.LossReasons() index, for Stats

	mu      sync.Mutex
	pending map[string]*lossTally
	logged  map[string]time.Time
}

func newLossTracker() *lossTracker {
	return &lossTracker{pending: map[string]*lossTally{}, logged: map[string]time.Time{}}
}

// add records n events lost at now for reason; firstSeq is the sequence
// number the writer would give the next record. It reports whether the
// loss should be logged now.
func (l *lossTracker) add(reason string, n, firstSeq uint64, now time.Time) (total uint64, logIt bool) {
	total = l.lost[reasonIndex(reason)].Add(n)
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.pending[reason]
	if t == nil {
		t = &lossTally{reason: reason, firstSeq: firstSeq, first: now}
		l.pending[reason] = t
	}
	t.count += n
	t.last = now
	if now.Sub(l.logged[reason]) >= 10*time.Second {
		l.logged[reason] = now
		logIt = true
	}
	return total, logIt
}

// take returns the pending tallies, in the order of audit.LossReasons,
// and forgets them.
func (l *lossTracker) take() []lossTally {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []lossTally
	for _, reason := range audit.LossReasons() {
		if t := l.pending[reason]; t != nil {
			out = append(out, *t)
			delete(l.pending, reason)
		}
	}
	return out
}

// putBack returns a tally whose loss record could not be written; losses
// counted since it was taken merge into it.
func (l *lossTracker) putBack(t lossTally) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := l.pending[t.reason]; cur != nil {
		cur.merge(t)
		return
	}
	l.pending[t.reason] = &t
}

// counts returns the events lost so far, by reason.
func (l *lossTracker) counts() map[string]uint64 {
	m := make(map[string]uint64, len(l.lost))
	for i, r := range audit.LossReasons() {
		m[r] = l.lost[i].Load()
	}
	return m
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

// lose counts n lost events of one name, logs (at most every 10 s per
// reason) and remembers the loss for a loss record.
func (s *Spool) lose(name, reason string, n uint64) {
	total, logIt := s.losses.add(reason, n, s.nextHint.Load(), s.cfg.Now())
	for i := uint64(0); i < n; i++ {
		s.failed(name)
	}
	if logIt {
		s.log.WithFields(logrus.Fields{logfield.Event: audit.NamePrefix + name, logfield.Reason: reason, logfield.LostTotal: total}).Error("audit events lost")
	}
}

// lossRecords turns the pending losses into loss records to be written;
// each keeps its tally, to be put back if the write fails.
func (s *Spool) lossRecords() []pending {
	ts := s.losses.take()
	out := make([]pending, len(ts))
	for i, t := range ts {
		e := &Entry{
			Name: NameLoss, Severity: audit.SeverityError, ID: audit.NewID(), Time: s.cfg.Now(), WorkerID: s.cfg.WorkerID,
			Fields: []audit.Field{
				{Key: "reason", Value: t.reason},
				{Key: "count", Value: t.count},
				{Key: "first_seq", Value: t.firstSeq},
				{Key: "first_lost_at", Value: t.first.UTC().Format(time.RFC3339Nano)},
				{Key: "last_lost_at", Value: t.last.UTC().Format(time.RFC3339Nano)},
			},
		}
		out[i] = pending{e: e, loss: &ts[i]}
	}
	return out
}
