package control

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus/hooks/test"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type countObserver struct{ n atomic.Int64 }

func (o *countObserver) RateLimited() { o.n.Add(1) }

func newLimitedServer(t *testing.T, rl RateLimit, clock *fakeClock) (*Server, *audit.Recorder, *countObserver) {
	t.Helper()
	devs, err := simgpu.New(simgpu.Config{GPUs: 1, MemoryBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := sealer.NewSigner(bytes.Repeat([]byte{7}, 32))
	rec := &audit.Recorder{}
	s, err := sealer.New(sealer.Config{WorkerID: "w", Devices: simgpu.Devices(devs), Signer: signer, Emitter: rec})
	if err != nil {
		t.Fatal(err)
	}
	log, _ := test.NewNullLogger()
	obs := &countObserver{}
	srv, err := NewServer(Config{Sealer: s, Access: Access{OwnUID: 999, AllowedUIDs: []uint32{1000, 1001}},
		RateLimit: rl, Observer: obs, Emitter: rec, WorkerID: "w", Now: clock.now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	return srv, rec, obs
}

// call makes one GET /v1/shards as uid.
func call(srv *Server, uid uint32) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, "/v1/shards", nil)
	r = r.WithContext(withPeer(context.Background(), Peer{UID: uid, GID: uid, PID: 42}, nil))
	w := httptest.NewRecorder()
	srv.Handler().ServeHTTP(w, r)
	return w
}

func TestRateLimitOffByDefault(t *testing.T) {
	srv, rec, obs := newLimitedServer(t, RateLimit{}, &fakeClock{t: time.Unix(1000, 0)})
	for range 200 {
		if w := call(srv, 1000); w.Code != http.StatusOK {
			t.Fatalf("status %d without a rate limit", w.Code)
		}
	}
	if obs.n.Load() != 0 || len(rec.Named(audit.NameControlRateLimited)) != 0 {
		t.Fatal("refusals counted without a rate limit")
	}
}

func TestRateLimitPerUID(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	srv, rec, obs := newLimitedServer(t, RateLimit{RequestsPerSecond: 1, Burst: 2}, clock)
	for i := range 2 {
		if w := call(srv, 1000); w.Code != http.StatusOK {
			t.Fatalf("call %d within the burst: status %d", i, w.Code)
		}
	}
	w := call(srv, 1000)
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "1" ||
		!strings.Contains(w.Body.String(), `"kind": "rate_limited"`) || !strings.Contains(w.Body.String(), "uid 1000 is over the control API's rate limit (control.rate_limit: 1 calls a second, bursts of 2); retry in 1s") {
		t.Fatalf("over the limit: %d %v %s", w.Code, w.Header(), w.Body)
	}
	for range 50 { // the flood goes on
		if w := call(srv, 1000); w.Code != http.StatusTooManyRequests {
			t.Fatalf("flood: status %d", w.Code)
		}
	}
	// Other callers are not starved; root and the agent's user are never limited.
	for _, uid := range []uint32{1001, 1001, 0, 0, 0, 999, 999, 999} {
		if w := call(srv, uid); w.Code != http.StatusOK {
			t.Fatalf("uid %d during another uid's flood: status %d", uid, w.Code)
		}
	}
	evs := rec.Named(audit.NameControlRateLimited)
	if len(evs) != 1 || obs.n.Load() != 51 {
		t.Fatalf("%d events (want 1: the first refusal of the burst), %d refusals counted (want 51)", len(evs), obs.n.Load())
	}
	ev := evs[0].(audit.ControlRateLimited)
	if ev.Cause.Kind != audit.CauseAPI || ev.Cause.Caller == nil || ev.Cause.Caller.UID != 1000 || ev.Cause.Caller.PID != 42 || ev.Endpoint != "GET /v1/shards" || ev.RequestsPerSecond != "1" || ev.Burst != 2 || ev.WorkerID != "w" {
		t.Fatalf("event %+v", ev)
	}
	// A second later one call goes through, and the next burst is audited again.
	clock.add(time.Second)
	if w := call(srv, 1000); w.Code != http.StatusOK {
		t.Fatalf("after a second: status %d", w.Code)
	}
	if w := call(srv, 1000); w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d", w.Code)
	}
	if n := len(rec.Named(audit.NameControlRateLimited)); n != 2 {
		t.Fatalf("%d events after a second burst, want 2", n)
	}
}

func TestCallerLimitsBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1000, 0)}
	l := newCallerLimits(RateLimit{RequestsPerSecond: 10, Burst: 10}, clock.now)
	l.max = 3
	for uid := range uint32(10) {
		l.allow(uid)
		clock.add(time.Millisecond)
	}
	if n := l.size(); n > 3 {
		t.Fatalf("%d limiters held, at most 3 allowed", n)
	}
	// Idle ones (full again after burst/rate = 1s) are dropped first.
	clock.add(2 * time.Second)
	l.allow(100)
	l.allow(101)
	if n := l.size(); n != 2 {
		t.Fatalf("%d limiters after the idle ones were dropped, want 2", n)
	}
}

func TestRateLimitRejectsBadConfig(t *testing.T) {
	_, err := NewServer(Config{Sealer: &sealer.Sealer{}, RateLimit: RateLimit{RequestsPerSecond: 1, Burst: -1}})
	if err == nil {
		t.Fatal("a negative burst was accepted")
	}
}
