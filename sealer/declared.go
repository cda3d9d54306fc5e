package sealer

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// DeclaredShard is a shard the agent's configuration says must be sealed.
type DeclaredShard struct {
	ID             string
	Path           string
	GPU            int
	ExpectedSHA256 string
	ModelRef       string
	LeafSize       uint64
}

// DeclaredConfig configures a Declared.
type DeclaredConfig struct {
	// MinBackoff is the wait before the first retry (1s when 0); each
	// further failure doubles it, up to MaxBackoff (5m when 0).
	MinBackoff, MaxBackoff time.Duration
	// Progress, when set, makes the progress callback of each seal.
	Progress func(id string) func(done, total uint64)
	// OnChange, when set, is called after each seal or release it made
	// (to tell the schedule).
	OnChange func()
	// Clock is the time source (RealClock when nil).
	Clock Clock
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
}

// Declared keeps the declared shards sealed: it seals each one, retries one
// that fails with exponential backoff (each failure is logged; the sealer
// emits its events), releases shards no longer declared, and re-seals a
// shard whose declaration changed. Shards it did not seal (sealed through
// the control API) are never touched. All methods are safe for concurrent use.
type Declared struct {
	s     *Sealer
	cfg   DeclaredConfig
	clock Clock
	log   logrus.FieldLogger
	wake  chan struct{}

	mu    sync.Mutex
	want  map[string]DeclaredShard
	state map[string]*declState
	held  map[string]DeclaredShard // sealed by us, as declared then
}

type declState struct {
	attempts int
	nextTry  time.Time
	lastErr  error
}

// NewDeclared returns a Declared sealing into s. Call Set, then Run.
func NewDeclared(s *Sealer, cfg DeclaredConfig) *Declared {
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 5 * time.Minute
	}
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	return &Declared{s: s, cfg: cfg, clock: cfg.Clock, log: cfg.Logger, wake: make(chan struct{}, 1),
		want: map[string]DeclaredShard{}, state: map[string]*declState{}, held: map[string]DeclaredShard{}}
}

// Set replaces the declared shards (start-up, or a reload). Run seals the
// new and changed ones and releases the removed ones; unchanged shards are
// left alone. It returns the ids added, removed and changed.
func (d *Declared) Set(shards []DeclaredShard) (added, removed, changed []string) {
	d.mu.Lock()
	next := make(map[string]DeclaredShard, len(shards))
	for _, sh := range shards {
		next[sh.ID] = sh
		old, ok := d.want[sh.ID]
		switch {
		case !ok:
			added = append(added, sh.ID)
		case old != sh:
			changed = append(changed, sh.ID)
		}
		if !ok || old != sh {
			d.state[sh.ID] = &declState{nextTry: time.Time{}}
		}
	}
	for id := range d.want {
		if _, ok := next[id]; !ok {
			removed = append(removed, id)
			delete(d.state, id)
		}
	}
	d.want = next
	d.mu.Unlock()
	slices.Sort(added)
	slices.Sort(removed)
	slices.Sort(changed)
	select {
	case d.wake <- struct{}{}:
	default:
	}
	return added, removed, changed
}

// Notify makes Run look at the declared shards now (after a release
// through the control API, for instance).
func (d *Declared) Notify() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Pending returns the declared shards not sealed yet, by id. A declared
// shard released behind the reconciler's back (through the control API)
// is pending again, and Run seals it again.
func (d *Declared) Pending() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []string
	for id, want := range d.want {
		held, ok := d.held[id]
		if ok && held == want {
			if _, err := d.s.Shard(id); KindOf(err) != KindNotFound {
				continue
			}
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

// forgetVanished drops what we sealed but the sealer no longer holds
// (released through the control API), so it is sealed again.
func (d *Declared) forgetVanished() {
	d.mu.Lock()
	var gone []string
	for id := range d.held {
		if _, err := d.s.Shard(id); KindOf(err) == KindNotFound {
			gone = append(gone, id)
		}
	}
	var again []string
	for _, id := range gone {
		delete(d.held, id)
		if st, ok := d.state[id]; ok {
			st.nextTry, st.attempts = time.Time{}, 0
			again = append(again, id)
		}
	}
	d.mu.Unlock()
	for _, id := range again {
		d.log.WithField(logfield.ShardID, id).Warn("a declared shard was released outside the configuration; sealing it again (remove it from the configuration and reload to release it for good)")
	}
}

// LastError returns the last error sealing a pending shard (nil if none).
func (d *Declared) LastError(id string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if st, ok := d.state[id]; ok {
		return st.lastErr
	}
	return nil
}

// Run keeps the declared shards sealed until ctx ends.
func (d *Declared) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		d.forgetVanished()
		d.releaseRemoved(ctx)
		wait := d.sealDue(ctx)
		if ctx.Err() != nil {
			break
		}
		if wait < 0 {
			wait = time.Hour
		}
		sleep(ctx, d.clock, wait, d.wake)
	}
	return nil
}

// releaseRemoved releases what we sealed that is no longer declared, or
// declared differently.
func (d *Declared) releaseRemoved(ctx context.Context) {
	d.mu.Lock()
	var drop []string
	for id, held := range d.held {
		if want, ok := d.want[id]; !ok || want != held {
			drop = append(drop, id)
		}
	}
	d.mu.Unlock()
	slices.Sort(drop)
	for _, id := range drop {
		_, err := d.s.Release(audit.WithCause(ctx, audit.Cause{Kind: audit.CauseReload}), id)
		if err != nil && KindOf(err) != KindNotFound {
			d.log.WithField(logfield.ShardID, id).WithError(err).Error("releasing a shard no longer declared failed")
			continue
		}
		d.mu.Lock()
		delete(d.held, id)
		d.mu.Unlock()
		d.log.WithField(logfield.ShardID, id).Info("released a shard no longer declared (or declared differently)")
		d.changed()
	}
}

func (d *Declared) changed() {
	if d.cfg.OnChange != nil {
		d.cfg.OnChange()
	}
}

// sealDue seals every pending shard whose time has come and returns how long
// until the next retry (-1: none pending).
func (d *Declared) sealDue(ctx context.Context) time.Duration {
	next := time.Duration(-1)
	for _, id := range d.Pending() {
		if ctx.Err() != nil {
			return 0
		}
		d.mu.Lock()
		want, ok := d.want[id]
		st := d.state[id]
		_, stale := d.held[id]
		d.mu.Unlock()
		if !ok || st == nil || stale {
			continue // removed meanwhile, or still to be released
		}
		now := d.clock.Now()
		if wait := st.nextTry.Sub(now); wait > 0 {
			if next < 0 || wait < next {
				next = wait
			}
			continue
		}
		req := SealRequest{ID: want.ID, Path: want.Path, GPU: want.GPU, ExpectedSHA256: want.ExpectedSHA256,
			ModelRef: want.ModelRef, LeafSize: want.LeafSize}
		if d.cfg.Progress != nil {
			req.Progress = d.cfg.Progress(want.ID)
		}
		seal, err := d.s.Seal(audit.WithCause(ctx, audit.Cause{Kind: audit.CauseDeclared}), req)
		if ctx.Err() != nil {
			return 0
		}
		d.mu.Lock()
		if err == nil {
			d.held[id] = want // if the declaration changed meanwhile, the next round releases it
			st.lastErr, st.attempts = nil, 0
			d.mu.Unlock()
			d.log.WithFields(logrus.Fields{logfield.ShardID: id, logfield.GPU: want.GPU, logfield.Bytes: seal.VRAMBytes, logfield.Digest: seal.Digest}).
				Info("declared shard sealed")
			d.changed()
			continue
		}
		st.attempts++
		st.lastErr = err
		backoff := d.cfg.MinBackoff << min(st.attempts-1, 20)
		if backoff > d.cfg.MaxBackoff || backoff <= 0 {
			backoff = d.cfg.MaxBackoff
		}
		st.nextTry = d.clock.Now().Add(backoff)
		attempts := st.attempts
		d.mu.Unlock()
		var se *Error
		reason := "error"
		if errors.As(err, &se) {
			reason = se.Kind.String()
		}
		d.log.WithFields(logrus.Fields{logfield.ShardID: id, logfield.GPU: want.GPU, logfield.Path: want.Path,
			logfield.Attempt: attempts, logfield.RetryIn: backoff.String(), logfield.Reason: reason}).WithError(err).
			Error("declared shard could not be sealed; will retry (the agent is not ready until it is sealed)")
		if next < 0 || backoff < next {
			next = backoff
		}
	}
	return next
}
