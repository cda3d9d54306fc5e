package sealer

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of the read-back buffers and of the verifications in flight.
const (
	// BufferSize is the size of one read-back buffer: a verification on
	// the host reads a shard back in runs of this many bytes (one leaf at a
	// time, in pieces, when leaves are larger).
	BufferSize = streamBuffer
	// DefaultBufferBudget bounds the bytes of every read-back buffer of
	// the process together: 8 buffers, enough for two verifications in
	// flight on each of two GPUs on a 2-core host.
	DefaultBufferBudget = 8 * BufferSize
	// DefaultMaxVerifyInFlightPerGPU bounds the verifications reading one
	// GPU at the same time.
	DefaultMaxVerifyInFlightPerGPU = 2
	// bufferIdle is how long idle buffers are kept for reuse before their
	// memory is given back to the system.
	bufferIdle = 5 * time.Second
)

// ErrBufferPoolClosed is returned by Get after Close.
var ErrBufferPoolClosed = errors.New("sealer: buffer pool closed")

// BufferPool hands out the read-back buffers of a process within a fixed
// byte budget: at most budget/BufferSize buffers exist at any time. A caller
// beyond that waits in Get, holding nothing, until a buffer is put back or
// its context ends. The buffers are mapped outside the Go heap, so they are
// not garbage to collect: idle ones are unmapped once the pool has been idle
// for a few seconds, and the process's memory returns after a burst.
//
// One pool is meant to be shared by every Sealer of a process (inject it
// with Config.Buffers). All methods are safe for concurrent use.
type BufferPool struct {
	tokens chan struct{} // one per buffer that may be checked out
	idle   time.Duration

	mu     sync.Mutex
	free   [][]byte
	mapped int // buffers mapped (checked out or free)
	timer  *time.Timer
	closed bool
}

// NewBufferPool returns a pool holding at most budget bytes of buffers
// (DefaultBufferBudget when 0). The budget must hold one buffer at least.
func NewBufferPool(budget uint64) (*BufferPool, error) {
	if budget == 0 {
		budget = DefaultBufferBudget
	}
	n := budget / BufferSize
	if n < 1 {
		return nil, fmt.Errorf("sealer: buffer budget %d bytes: want at least %d (one buffer)", budget, BufferSize)
	}
	if n > 1<<16 {
		return nil, fmt.Errorf("sealer: buffer budget %d bytes: at most %d buffers of %d bytes allowed", budget, 1<<16, BufferSize)
	}
	return &BufferPool{tokens: make(chan struct{}, n), idle: bufferIdle}, nil
}

// Budget is the most bytes the pool's buffers take together.
func (p *BufferPool) Budget() uint64 { return uint64(cap(p.tokens)) * BufferSize }

// Mapped is the bytes of buffers mapped now (in use or kept for reuse).
func (p *BufferPool) Mapped() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return uint64(p.mapped) * BufferSize
}

// Get returns a buffer of BufferSize bytes, waiting while the budget is
// spent. It returns ctx's error when ctx ends first. The buffer must be
// given back with Put, once, and not used after.
func (p *BufferPool) Get(ctx context.Context) ([]byte, error) {
	select {
	case p.tokens <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return p.take()
}

// take returns a buffer for a token just taken, giving the token back on
// failure.
func (p *BufferPool) take() ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		<-p.tokens
		return nil, ErrBufferPoolClosed
	}
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b, nil
	}
	b, err := unix.Mmap(-1, 0, BufferSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		<-p.tokens
		return nil, fmt.Errorf("sealer: mapping a read-back buffer: %w", err)
	}
	p.mapped++
	return b, nil
}

// Put gives back a buffer that Get returned.
func (p *BufferPool) Put(b []byte) {
	b = b[:cap(b)]
	p.mu.Lock()
	if p.closed {
		p.unmap(b)
	} else {
		p.free = append(p.free, b)
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idle, p.Trim)
		} else {
			p.timer.Reset(p.idle)
		}
	}
	p.mu.Unlock()
	<-p.tokens
}

// Trim unmaps the buffers not in use now. The pool calls it itself once it
// has been idle for a few seconds.
func (p *BufferPool) Trim() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.free {
		p.unmap(b)
	}
	clear(p.free)
	p.free = p.free[:0]
}

// Close unmaps the free buffers; the ones in use are unmapped when they are
// put back. Get fails after Close.
func (p *BufferPool) Close() {
	p.mu.Lock()
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
	p.Trim()
}

// unmap must be called with p.mu held.
func (p *BufferPool) unmap(b []byte) {
	_ = unix.Munmap(b) // only fails for a slice that is not a mapping
	p.mapped--
}
