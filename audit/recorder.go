package audit

import (
	"context"
	"sync"
)

// Recorder keeps every emitted event in memory, for tests. Its receipts are
// settled with the error set by SetDurability (nil by default: durable).
type Recorder struct {
	mu     sync.Mutex
	events []Recorded
	err    error
}

// Recorded is one event a Recorder received, with the context it came with.
type Recorded struct {
	Ctx   context.Context
	Event Event
}

// Emit records ev.
func (r *Recorder) Emit(ctx context.Context, ev Event) Receipt {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, Recorded{Ctx: ctx, Event: ev})
	return Settled(r.err)
}

// SetDurability sets what later receipts report (nil: durable).
func (r *Recorder) SetDurability(err error) {
	r.mu.Lock()
	r.err = err
	r.mu.Unlock()
}

// Events returns the recorded events, oldest first.
func (r *Recorder) Events() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Event, len(r.events))
	for i, e := range r.events {
		out[i] = e.Event
	}
	return out
}

// Recorded returns the recorded events with their contexts.
func (r *Recorder) Recorded() []Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Recorded(nil), r.events...)
}

// Named returns the recorded events with the given name, oldest first.
func (r *Recorder) Named(name string) []Event {
	var out []Event
	for _, e := range r.Events() {
		if e.Name() == name {
			out = append(out, e)
		}
	}
	return out
}

// Reset forgets every recorded event.
func (r *Recorder) Reset() {
	r.mu.Lock()
	r.events = nil
	r.mu.Unlock()
}

var _ Emitter = (*Recorder)(nil)
