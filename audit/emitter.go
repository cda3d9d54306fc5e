package audit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Emitter takes audit events from the code that reports them.
//
// Emit must be safe for concurrent use, must not block on I/O, and must never
// fail the operation it reports: a failure is logged and counted by the
// Emitter itself and shows only in the Receipt. After Close, Emit still
// returns at once; the Receipt reports ErrClosed.
type Emitter interface {
	Emit(ctx context.Context, ev Event) Receipt
}

// ErrNotDurable is what a Receipt reports when its Emitter keeps no durable
// local copy (the operational-log emitter, for instance).
var ErrNotDurable = errors.New("audit: emitter keeps no durable copy")

// ErrClosed is what a Receipt reports for an event emitted after Close.
var ErrClosed = errors.New("audit: emitter closed")

// ErrDurabilityTimeout is what WaitDurable reports when the bound passed
// before the record was durable.
var ErrDurabilityTimeout = errors.New("audit: record not durable within the bound")

// Receipt tells whether an emitted event's record became durable.
// The zero Receipt reports ErrNotDurable.
type Receipt struct {
	w *waiter
}

type waiter struct {
	once sync.Once
	done chan struct{}
	err  error
}

// NewReceipt returns a pending Receipt and the function that settles it:
// call settle(nil) once the record is durable, settle(err) when it cannot be.
// Only the first call counts.
func NewReceipt() (r Receipt, settle func(error)) {
	w := &waiter{done: make(chan struct{})}
	return Receipt{w: w}, func(err error) {
		w.once.Do(func() {
			w.err = err
			close(w.done)
		})
	}
}

// Settled returns a Receipt that is already settled with err (nil: durable).
func Settled(err error) Receipt {
	r, settle := NewReceipt()
	settle(err)
	return r
}

// Wait blocks until the record is durable (nil), cannot be (the error), or
// ctx ends (ctx's error).
func (r Receipt) Wait(ctx context.Context) error {
	if r.w == nil {
		return ErrNotDurable
	}
	select {
	case <-r.w.done:
		return r.w.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WaitDurable waits at most bound for r; it returns ErrDurabilityTimeout when
// the bound passes first. It is how an operation waits for its CRITICAL
// record before returning its own result (docs/audit-events.md, "Durability").
func WaitDurable(ctx context.Context, r Receipt, bound time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), bound)
	defer cancel()
	err := r.Wait(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w (%s)", ErrDurabilityTimeout, bound)
	}
	return err
}

// Counters counts emitted events and emit failures by event name. It is safe
// for concurrent use; the metrics collector reads Snapshot.
type Counters struct {
	mu       sync.Mutex
	events   map[string]uint64
	failures map[string]uint64
}

// NewCounters returns Counters with every known event name at zero, so the
// series exist before the first event.
func NewCounters() *Counters {
	c := &Counters{events: map[string]uint64{}, failures: map[string]uint64{}}
	for _, n := range Names {
		c.events[n] = 0
		c.failures[n] = 0
	}
	return c
}

// Emitted counts one event handed to the pipeline.
func (c *Counters) Emitted(name string) {
	c.mu.Lock()
	c.events[name]++
	c.mu.Unlock()
}

// Failed counts one event the pipeline failed to take or keep.
func (c *Counters) Failed(name string) {
	c.mu.Lock()
	c.failures[name]++
	c.mu.Unlock()
}

// CountSnapshot is a copy of the counters at one moment.
type CountSnapshot struct {
	Events   map[string]uint64
	Failures map[string]uint64
}

// Snapshot returns a copy of the counters.
func (c *Counters) Snapshot() CountSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := CountSnapshot{Events: make(map[string]uint64, len(c.events)), Failures: make(map[string]uint64, len(c.failures))}
	for k, v := range c.events {
		s.Events[k] = v
	}
	for k, v := range c.failures {
		s.Failures[k] = v
	}
	return s
}
