package sealer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// Lease is one consumer's hold on a sealed shard, from Open until Close: a
// shard with leases is not released unless forced. File maps the shard's
// memory; the caller passes it to the consumer and closes it.
type Lease struct {
	File *os.File
	// Memory is what File is (Exported.Kind).
	Memory string
	// MappedSize and GPUUUID are what a consumer needs to import CUDA
	// memory (Exported); zero otherwise.
	MappedSize uint64
	GPUUUID    string
	Seal       Seal
	// Consumer is who holds the lease.
	Consumer audit.Caller

	s      *Sealer
	sh     *shard
	revoke func()
	once   sync.Once
}

// Open lends a sealed shard's memory to a consumer: the device exports it
// (Exporter) and vram.opened names the consumer. revoke (optional) is
// called when a forced release or shutdown takes the shard away, to cut the
// consumer off; the lease then ends on its own. A shard being sealed, one
// that failed verification, or one on a device that cannot export, cannot
// be opened.
func (s *Sealer) Open(ctx context.Context, id string, consumer audit.Caller, revoke func()) (*Lease, error) {
	ctx = audit.WithCause(ctx, audit.Cause{Kind: audit.CauseLease, Caller: &consumer})
	s.mu.Lock()
	sh, ok := s.sealedLocked(id)
	switch {
	case !ok:
		s.mu.Unlock()
		return nil, opErr("open", id, KindNotFound, errors.New("no such shard"))
	case sh.failed:
		s.mu.Unlock()
		return nil, opErr("open", id, KindIntegrity, errors.New("the shard failed verification: it is not handed out"))
	case s.closing:
		s.mu.Unlock()
		return nil, opErr("open", id, KindCancelled, errors.New("the agent is shutting down"))
	case sh.origin == OriginAttached:
		s.mu.Unlock()
		return nil, opErr("open", id, KindInvalid, errors.New("the shard is attached memory of another process: it is its owner's to share"))
	}
	sh.mem.RLock()
	s.mu.Unlock()
	defer sh.mem.RUnlock()
	exp, ok := sh.dev.(Exporter)
	if !ok {
		return nil, opErr("open", id, KindInvalid, fmt.Errorf("GPU %d cannot hand shards to other processes", sh.seal.GPUDevice))
	}
	x, err := exp.Export(ctx, sh.alloc)
	if err != nil {
		return nil, opErr("open", id, KindDevice, err)
	}
	f := x.File
	l := &Lease{File: f, Memory: x.Kind, MappedSize: x.MappedSize, GPUUUID: x.GPUUUID, Seal: sh.seal, Consumer: consumer, s: s, sh: sh, revoke: revoke}
	s.mu.Lock()
	if s.shards[id] != sh {
		s.mu.Unlock()
		f.Close()
		return nil, opErr("open", id, KindNotFound, errors.New("shard released"))
	}
	sh.leases[l] = struct{}{}
	s.mu.Unlock()
	s.emit(ctx, audit.VRAMOpened{Header: s.header(ctx, sh.seal.GPUDevice), ShardID: id, GPUDevice: sh.seal.GPUDevice, Consumer: consumer})
	return l, nil
}

// Close ends the lease (the consumer closed it or went away). It is safe
// to call more than once and after the shard was released.
func (l *Lease) Close(ctx context.Context) {
	l.end(audit.WithCause(ctx, audit.Cause{Kind: audit.CauseLease, Caller: &l.Consumer}), audit.CloseConsumer)
}

func (l *Lease) end(ctx context.Context, reason string) {
	l.once.Do(func() {
		l.s.mu.Lock()
		delete(l.sh.leases, l)
		l.s.mu.Unlock()
		l.s.emit(ctx, audit.VRAMClosed{Header: l.s.header(ctx, l.Seal.GPUDevice), ShardID: l.Seal.ShardID, GPUDevice: l.Seal.GPUDevice,
			Consumer: l.Consumer, Reason: reason})
	})
}

// holders lists a shard's lease holders. Call with Sealer.mu held.
func (sh *shard) holders() []audit.Caller {
	out := make([]audit.Caller, 0, len(sh.leases))
	for l := range sh.leases {
		out = append(out, l.Consumer)
	}
	return out
}

// busyErr is the refusal of a release while consumers hold the shard.
func busyErr(id string, holders []audit.Caller) error {
	names := make([]string, len(holders))
	for i, h := range holders {
		names[i] = h.String()
	}
	return opErr("release", id, KindBusy, fmt.Errorf("held by %d consumer(s): %s; release with force to revoke the leases",
		len(holders), strings.Join(names, ", ")))
}

// revokeAll ends every lease of a shard that is no longer in the map,
// cutting each consumer off, and returns the known pids that may still map
// its memory.
func (s *Sealer) revokeAll(ctx context.Context, sh *shard, reason string) []int64 {
	s.mu.Lock()
	ls := make([]*Lease, 0, len(sh.leases))
	for l := range sh.leases {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	var pids []int64
	for _, l := range ls {
		if l.revoke != nil {
			l.revoke()
		}
		l.end(ctx, reason)
		if l.Consumer.PID > 0 {
			pids = append(pids, l.Consumer.PID)
		}
	}
	return pids
}

// Leases returns the number of open leases over every shard.
func (s *Sealer) Leases() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, sh := range s.shards {
		n += len(sh.leases)
	}
	return n
}

// WaitUnleased waits until no shard has a lease, or ctx ends (then it
// returns ctx's error): at shutdown, consumers get a grace period.
func (s *Sealer) WaitUnleased(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for s.Leases() > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}
