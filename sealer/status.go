package sealer

// What the sealer reports of its shards.

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/vramseal/vramseal/audit"
)

// ShardStatus is one sealed shard as List reports it.
type ShardStatus struct {
	Seal Seal `json:"seal"`
	// State is "sealed", or "failed" once a verification found the shard
	// altered, its allocation missing or its seal invalid (it stays so).
	State string `json:"state"`
	// LastVerifiedAt is the last successful verification (zero: none).
	LastVerifiedAt time.Time `json:"last_verified_at"`
	// LastCheckedAt is the last verification, whatever its result.
	LastCheckedAt time.Time `json:"last_checked_at"`
	// LastResult is the last verification's result ("" before the first).
	LastResult string `json:"last_result"`
	// Leases are the consumers holding the shard (Open).
	Leases []audit.Caller `json:"leases"`
	// Origin is "sealed" (the agent loaded the file) or "attached" (an
	// engine's own memory, sealed in place).
	Origin string `json:"origin"`
	// Owner is the process that attached the memory (origin "attached"
	// only).
	Owner *audit.Caller `json:"owner,omitempty"`
}

// Shard states.
const (
	StateSealed = "sealed"
	StateFailed = "failed"
)

// List returns every sealed shard, by id.
func (s *Sealer) List() []ShardStatus {
	s.mu.Lock()
	out := make([]ShardStatus, 0, len(s.shards))
	for _, sh := range s.shards {
		if sh.sealing {
			continue
		}
		out = append(out, sh.status())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ShardStatus) int {
		switch {
		case a.Seal.ShardID < b.Seal.ShardID:
			return -1
		case a.Seal.ShardID > b.Seal.ShardID:
			return 1
		}
		return 0
	})
	return out
}

// Shard returns one shard's status.
func (s *Sealer) Shard(id string) (ShardStatus, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sh, ok := s.sealedLocked(id)
	if !ok {
		return ShardStatus{}, opErr("status", id, KindNotFound, errors.New("no such shard"))
	}
	return sh.status(), nil
}

// status must be called with Sealer.mu held.
func (sh *shard) status() ShardStatus {
	st := ShardStatus{Seal: sh.seal, State: StateSealed, LastVerifiedAt: sh.lastOK, LastCheckedAt: sh.lastChecked, LastResult: sh.lastResult,
		Leases: sh.holders(), Origin: sh.origin, Owner: sh.owner}
	if sh.failed {
		st.State = StateFailed
	}
	return st
}

// UsedBytes returns the bytes this agent holds on each GPU.
func (s *Sealer) UsedBytes() map[int]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]uint64, len(s.devices))
	for i := range s.devices {
		out[i] = s.used[i]
	}
	return out
}

// Memory runs fn with a sealed shard's device, allocation and size, while
// the shard cannot be freed: a Release of it waits until fn returns. It is
// how adapters outside the domain reach a shard's memory (the simulated
// GPU's fault injection). fn must be short and must not call the Sealer.
// An unknown shard is a KindNotFound error; an error of fn is returned
// with the kind it carries, else KindInvalid (KindDevice for a lost device
// or allocation).
func (s *Sealer) Memory(ctx context.Context, op, id string, fn func(dev Device, a Allocation, size uint64) error) error {
	s.mu.Lock()
	sh, ok := s.sealedLocked(id)
	if ok {
		sh.mem.RLock()
	}
	s.mu.Unlock()
	if !ok {
		return opErr(op, id, KindNotFound, errors.New("no such shard"))
	}
	defer sh.mem.RUnlock()
	if sh.ctx.Err() != nil {
		return opErr(op, id, KindNotFound, errors.New("shard released"))
	}
	err := fn(sh.dev, sh.alloc, sh.seal.VRAMBytes)
	switch {
	case err == nil:
		return nil
	case KindOf(err) != 0:
		return err
	case errors.Is(err, ErrDeviceLost) || errors.Is(err, ErrAllocationMissing):
		return opErr(op, id, KindDevice, err)
	}
	return opErr(op, id, KindInvalid, err)
}
