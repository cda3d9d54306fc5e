package audit

import (
	"context"
	"sync"
)

// Recent keeps the last events emitted, in memory, for the agent's status
// page. It is bounded (the oldest event makes room for the newest) and cheap:
// Emit takes a lock and stores one interface value. It keeps no durable
// copy: every Receipt reports ErrNotDurable, so it belongs in a Tee's Also.
// It is safe for concurrent use.
type Recent struct {
	mu    sync.Mutex
	ring  []Event
	next  int    // the slot the next event goes to
	total uint64 // events emitted since the start
}

// NewRecent returns a Recent keeping the last n events (at least 1).
func NewRecent(n int) *Recent {
	return &Recent{ring: make([]Event, max(n, 1))}
}

// Emit keeps ev, dropping the oldest event kept when full.
func (r *Recent) Emit(_ context.Context, ev Event) Receipt {
	r.mu.Lock()
	r.ring[r.next] = ev
	r.next = (r.next + 1) % len(r.ring)
	r.total++
	r.mu.Unlock()
	return Settled(ErrNotDurable)
}

// Events returns the events kept, newest first, and how many were emitted
// in all (so a reader can say how many it does not show).
func (r *Recent) Events() (newestFirst []Event, total uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(r.ring)
	out := make([]Event, 0, min(uint64(n), r.total))
	for i := 1; i <= n; i++ {
		ev := r.ring[(r.next-i+n)%n]
		if ev == nil {
			break
		}
		out = append(out, ev)
	}
	return out, r.total
}

var _ Emitter = (*Recent)(nil)
