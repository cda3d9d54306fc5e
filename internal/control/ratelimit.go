package control

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/internal/logfield"
)

// RateLimit is the per-caller rate limit (control.rate_limit): each uid may
// call RequestsPerSecond times a second, Burst at once. RequestsPerSecond 0
// turns it off. Root and the agent's own user are never limited.
type RateLimit struct {
	RequestsPerSecond float64
	Burst             int
}

// On reports whether the limit applies.
func (r RateLimit) On() bool { return r.RequestsPerSecond > 0 }

// Observer counts the refusals of the control API, for metrics.
type Observer interface {
	// RateLimited is called for every call refused by the rate limit.
	RateLimited()
}

// maxCallers bounds the uids whose limiters are kept. When it is reached,
// limiters idle long enough to be full again are dropped (forgetting them
// changes nothing), then the longest idle one.
const maxCallers = 4096

// callerLimits holds one token bucket per calling uid, in a bounded map.
type callerLimits struct {
	limit rate.Limit
	burst int
	full  time.Duration // an idle bucket is full again after this long
	max   int
	now   func() time.Time

	mu      sync.Mutex
	callers map[uint32]*callerLimit
}

type callerLimit struct {
	bucket *rate.Limiter
	last   time.Time
	// refusing: the last call was refused (a burst of refusals is going
	// on, and its first one was audited).
	refusing bool
}

func newCallerLimits(r RateLimit, now func() time.Time) *callerLimits {
	burst := max(1, r.Burst)
	full := time.Duration(math.Ceil(float64(burst) / r.RequestsPerSecond * float64(time.Second)))
	return &callerLimits{
		limit: rate.Limit(r.RequestsPerSecond), burst: burst, full: full, max: maxCallers, now: now,
		callers: map[uint32]*callerLimit{},
	}
}

// allow takes one token of uid's bucket. It reports whether the call may go
// on and, when it may not, whether it is the first refusal of a burst.
func (l *callerLimits) allow(uid uint32) (ok, first bool) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.callers[uid]
	if c == nil {
		if len(l.callers) >= l.max {
			l.evict(now)
		}
		c = &callerLimit{bucket: rate.NewLimiter(l.limit, l.burst)}
		l.callers[uid] = c
	}
	c.last = now
	if c.bucket.AllowN(now, 1) {
		c.refusing = false
		return true, false
	}
	first = !c.refusing
	c.refusing = true
	return false, first
}

// evict drops the limiters idle long enough to be full again; if none is,
// the longest idle one. It must be called with l.mu held.
func (l *callerLimits) evict(now time.Time) {
	var oldest uint32
	var oldestAt time.Time
	dropped := false
	for uid, c := range l.callers {
		if now.Sub(c.last) >= l.full {
			delete(l.callers, uid)
			dropped = true
			continue
		}
		if oldestAt.IsZero() || c.last.Before(oldestAt) {
			oldest, oldestAt = uid, c.last
		}
	}
	if !dropped {
		delete(l.callers, oldest)
	}
}

// size is the number of limiters held.
func (l *callerLimits) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.callers)
}

// rateLimited answers a call over its caller's limit, or reports that it
// may go on. Root and the agent's own user are never limited.
func (s *Server) rateLimited(w http.ResponseWriter, r *http.Request, p Peer, fields logrus.Fields) bool {
	if s.limits == nil || p.UID == 0 || p.UID == s.cfg.Access.OwnUID {
		return false
	}
	ok, first := s.limits.allow(p.UID)
	if ok {
		return false
	}
	if s.cfg.Observer != nil {
		s.cfg.Observer.RateLimited()
	}
	rl := s.cfg.RateLimit
	if first {
		s.auditRateLimited(r.Context(), p, r.Method+" "+r.URL.Path, fields)
	}
	retry := max(1, int(math.Ceil(1/rl.RequestsPerSecond)))
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	writeError(w, http.StatusTooManyRequests, client.KindRateLimited, fmt.Sprintf(
		"rate limited: uid %d is over the control API's rate limit (control.rate_limit: %g calls a second, bursts of %d); retry in %ds",
		p.UID, rl.RequestsPerSecond, s.limits.burst, retry))
	return true
}

// auditRateLimited emits the event of the first refusal of a burst, and
// logs it.
func (s *Server) auditRateLimited(ctx context.Context, p Peer, endpoint string, fields logrus.Fields) {
	h := audit.NewHeader(s.now().UTC(), s.cfg.WorkerID)
	caller := p.Caller(ProcReader{})
	h.Cause = audit.Cause{Kind: audit.CauseAPI, Caller: &caller}
	ev := audit.ControlRateLimited{
		Header: h, Endpoint: endpoint, RequestsPerSecond: strconv.FormatFloat(s.cfg.RateLimit.RequestsPerSecond, 'g', -1, 64),
		Burst: s.limits.burst,
	}
	if s.cfg.Emitter != nil {
		s.cfg.Emitter.Emit(ctx, ev)
	}
	s.log.WithFields(fields).WithFields(logrus.Fields{
		logfield.RequestsPerSecond: s.cfg.RateLimit.RequestsPerSecond, logfield.Burst: s.limits.burst, logfield.EventID: ev.ID,
	}).Warn("control API caller over its rate limit: refusing its calls until it slows down (only this first refusal is logged and audited)")
}
