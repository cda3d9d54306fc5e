package sealer

// Releasing shards: freeing their memory, with or without consumer leases.

import (
	"context"
	"errors"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
)

// ReleaseResult is what a release freed.
type ReleaseResult struct {
	ShardID       string `json:"shard_id"`
	GPUDevice     int    `json:"gpu_device"`
	FreedBytes    uint64 `json:"freed_bytes"`
	RemainingUsed uint64 `json:"remaining_used"`
	// StillMappedBy lists the pids of consumers whose leases a forced
	// release ended: they may still map the memory.
	StillMappedBy []int64 `json:"still_mapped_by,omitempty"`
}

// Release frees a shard's VRAM and forgets it. A verification in flight is
// cancelled (its result is "cancelled", not a failure) and waited for. A
// shard that consumers hold (Open) is not released: the error, of
// KindBusy, names them.
func (s *Sealer) Release(ctx context.Context, id string) (ReleaseResult, error) {
	return s.release(ctx, id, false, audit.DeallocReleased)
}

// ForceRelease releases a shard even while consumers hold it: their leases
// are revoked (each consumer cut off, with vram.closed), and the
// vram.deallocated event lists the pids that may still map the memory.
func (s *Sealer) ForceRelease(ctx context.Context, id string) (ReleaseResult, error) {
	return s.release(ctx, id, true, audit.DeallocForced)
}

func (s *Sealer) release(ctx context.Context, id string, force bool, reason string) (ReleaseResult, error) {
	sh, ok := s.lookup(id)
	if !ok {
		return ReleaseResult{}, opErr("release", id, KindNotFound, errors.New("no such shard"))
	}
	return s.releaseShard(ctx, sh, force, reason)
}

// releaseShard releases sh if it is still the shard of its id.
func (s *Sealer) releaseShard(ctx context.Context, sh *shard, force bool, reason string) (res ReleaseResult, err error) {
	id := sh.seal.ShardID
	ctx, span := s.tracer.Start(ctx, "vramseal.release", trace.WithAttributes(attribute.String("vramseal.shard.id", id)))
	defer func() { endSpan(span, err) }()
	s.mu.Lock()
	ok := s.shards[id] == sh && !sh.sealing
	if ok && !force && len(sh.leases) > 0 {
		holders := sh.holders()
		s.mu.Unlock()
		return ReleaseResult{}, busyErr(id, holders)
	}
	if ok {
		delete(s.shards, id)
	}
	s.mu.Unlock()
	if !ok {
		return ReleaseResult{}, opErr("release", id, KindNotFound, errors.New("no such shard"))
	}
	span.SetAttributes(attribute.Int("gpu.device.index", sh.seal.GPUDevice))
	sh.cancel()
	closeReason := audit.CloseRevoked
	if reason == audit.DeallocShutdown {
		closeReason = audit.CloseShutdown
	}
	mapped := s.revokeAll(ctx, sh, closeReason)
	sh.verify <- struct{}{} // wait for a verification in flight to see the cancellation
	defer func() { <-sh.verify }()
	sh.mem.Lock() // and for Memory's callers
	defer sh.mem.Unlock()
	remaining := s.freeAllocation(ctx, id, sh.dev, sh.alloc, reason, mapped)
	return ReleaseResult{ShardID: id, GPUDevice: sh.seal.GPUDevice, FreedBytes: sh.seal.VRAMBytes, RemainingUsed: remaining,
		StillMappedBy: mapped}, nil
}

// freeAllocation frees an allocation and emits vram.deallocated. A device
// that reports the allocation already gone (lost, reset) counts as freed;
// the failure is logged.
func (s *Sealer) freeAllocation(ctx context.Context, id string, dev Device, a Allocation, reason string, stillMappedBy []int64) uint64 {
	size := a.Size()
	if err := dev.Free(context.WithoutCancel(ctx), a); err != nil {
		s.log.WithFields(logrus.Fields{logfield.ShardID: id, logfield.GPU: dev.Index()}).WithError(err).
			Warn("device reported an error freeing the shard's memory; counting it as freed")
	}
	s.mu.Lock()
	s.used[dev.Index()] = sub(s.used[dev.Index()], size)
	remaining := s.used[dev.Index()]
	s.mu.Unlock()
	s.emit(ctx, audit.VRAMDeallocated{Header: s.header(ctx, dev.Index()), ShardID: id, GPUDevice: dev.Index(), FreedBytes: size, RemainingUsed: remaining,
		Reason: reason, StillMappedBy: stillMappedBy})
	return remaining
}

// ReleaseAll releases every shard at shutdown, leased or not (the leases
// end with reason shutdown), returning the errors joined.
func (s *Sealer) ReleaseAll(ctx context.Context) error {
	var errs []error
	for _, st := range s.List() {
		if _, err := s.release(ctx, st.Seal.ShardID, true, audit.DeallocShutdown); err != nil && KindOf(err) != KindNotFound {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
