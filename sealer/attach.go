package sealer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/vramseal/vramseal/audit"
)

// Shard origins (ShardStatus.Origin, the vram.sealed event's origin).
const (
	OriginSealed   = "sealed"   // the agent loaded the file into memory of its own
	OriginAttached = "attached" // an engine's own memory, sealed in place
)

// Adopter is implemented by devices that can take memory another process
// owns and read it in place (attach): a descriptor of that memory, of which
// the first size bytes are sealed. The device keeps its own reference and
// maps the memory read-only; Free drops the reference, never the owner's
// memory.
type Adopter interface {
	Adopt(ctx context.Context, memory *os.File, size uint64) (Allocation, error)
}

// AttachRequest asks the sealer to seal memory an engine owns.
type AttachRequest struct {
	ID  string
	GPU int
	// Memory is the owner's memory (a memfd sealed against shrinking and
	// growing on the simulated GPU, a VMM descriptor on CUDA); the caller
	// keeps and closes it.
	Memory *os.File
	// Size is how many bytes, from offset 0 (Offset for an IPC handle),
	// to seal.
	Size uint64
	// IPCHandle, instead of Memory, is a legacy CUDA IPC handle of the
	// owner's allocator segment (IPCAdopter); Offset is where the bytes
	// to seal start in it. Optional.
	IPCHandle *[IPCHandleSize]byte
	Offset    uint64
	// GPUUUID, when set, names the GPU instead of GPU (the engine's
	// ordinals need not be the agent's). Optional.
	GPUUUID string
	// ExpectedSHA256 pins the content (hex); ModelRef is recorded.
	ExpectedSHA256 string
	ModelRef       string
	// LeafSize overrides the default leaf size when not 0.
	LeafSize uint64
	// Owner is the process that attached the memory.
	Owner audit.Caller
}

// Attachment is an attached shard's hold by its owner: the shard stays
// sealed and verified in place until the owner detaches it or goes away.
type Attachment struct {
	Seal Seal
	// Owner is the process that attached the memory.
	Owner audit.Caller
	s     *Sealer
	sh    *shard
	once  sync.Once
}

// Attach seals memory an engine owns, in place: it hashes what it finds
// (checking the expected content digest when given), signs the seal and
// re-verifies it on the schedule like any shard. Attached shards are not
// handed to other consumers. The owner ends it with Detach, or OwnerExited
// when it goes away.
func (s *Sealer) Attach(ctx context.Context, req AttachRequest) (att *Attachment, err error) {
	ctx = audit.WithCause(ctx, audit.Cause{Kind: audit.CauseLease, Caller: &req.Owner})
	ctx, span := s.tracer.Start(ctx, "vramseal.attach")
	defer func() { endSpan(span, err) }()
	fail := func(k Kind, err error) (*Attachment, error) { return nil, opErr("attach", req.ID, k, err) }
	ctx, done, err := s.begin(ctx)
	if err != nil {
		return fail(KindCancelled, err)
	}
	defer done()
	leafSize, expected, err := s.checkRequest(req.ID, req.LeafSize, req.ModelRef, req.ExpectedSHA256)
	if err != nil {
		return fail(KindInvalid, err)
	}
	if (req.Memory == nil) == (req.IPCHandle == nil) || req.Size == 0 {
		return fail(KindInvalid, errors.New("no memory given (a descriptor or a CUDA IPC handle, and a size of at least 1 byte)"))
	}
	if req.Offset != 0 && req.IPCHandle == nil {
		return fail(KindInvalid, errors.New("an offset is given only with a CUDA IPC handle"))
	}
	if req.IPCHandle != nil && req.Owner.PID <= 0 {
		return fail(KindInvalid, errIPCNamespace)
	}
	if req.GPUUUID != "" {
		if req.GPU, err = s.deviceByUUID(ctx, req.GPUUUID); err != nil {
			return fail(KindInvalid, err)
		}
	}
	dev, ok := s.devices[req.GPU]
	if !ok {
		return fail(KindInvalid, fmt.Errorf("no GPU %d (have %v)", req.GPU, s.GPUs()))
	}
	if _, ok := dev.(Adopter); !ok && req.IPCHandle == nil {
		return fail(KindInvalid, errNoAttach(req.GPU, "memory of another process"))
	}
	if _, ok := dev.(IPCAdopter); !ok && req.IPCHandle != nil {
		return fail(KindInvalid, errNoAttach(req.GPU, "a CUDA IPC handle"))
	}
	sreq := SealRequest{ID: req.ID, GPU: req.GPU, ModelRef: req.ModelRef}
	if s.cfg.Admission != nil {
		if err := s.cfg.Admission.Admit(ctx, req.GPU); err != nil {
			s.allocationFailed(ctx, sreq, req.Size, s.available(ctx, dev), audit.ReasonPolicyBlocked)
			return fail(KindPolicy, err)
		}
	}
	sh, err := s.reserve(ctx, sreq, dev, req.Size)
	if err != nil {
		return nil, err
	}
	alloc, err := adopt(ctx, dev, req)
	s.mu.Lock()
	s.reserved[req.GPU] -= req.Size
	s.mu.Unlock()
	if err != nil {
		s.forget(req.ID)
		switch {
		case errors.Is(err, ErrOutOfMemory):
			return fail(KindInsufficientVRAM, err)
		case errors.Is(err, ErrDeviceLost):
			return fail(KindDevice, err)
		}
		return fail(KindInvalid, err)
	}
	s.mu.Lock()
	s.used[req.GPU] += req.Size
	s.mu.Unlock()
	undo := func() {
		s.freeAllocation(ctx, req.ID, dev, alloc, audit.DeallocSealFailed, nil)
		s.forget(req.ID)
	}
	d, err := DigestReader(&allocReader{ctx: ctx, dev: dev, a: alloc, size: req.Size}, leafSize)
	if err != nil {
		undo()
		s.observeSeal(req.GPU, ResultError)
		if ctx.Err() != nil {
			return fail(KindCancelled, err)
		}
		return fail(KindDevice, err)
	}
	owner := req.Owner
	s.mu.Lock()
	sh.owner = &owner
	s.mu.Unlock()
	seal, err := s.complete(ctx, sreq, sh, dev, alloc, req.Size, leafSize, expected, d, OriginAttached, undo)
	if err != nil {
		return nil, err
	}
	return &Attachment{Seal: seal, Owner: req.Owner, s: s, sh: sh}, nil
}

// Detach ends the attachment at its owner's request: the shard is released
// (vram.deallocated reason detached) and the owner's memory is the owner's
// again. Call it before freeing or changing the memory: a change while
// attached is a failed verification, as it should be.
func (a *Attachment) Detach(ctx context.Context) (ReleaseResult, error) {
	return a.end(audit.WithCause(ctx, audit.Cause{Kind: audit.CauseLease, Caller: &a.Owner}), audit.DeallocDetached)
}

// OwnerExited ends the attachment because its owner went away (its
// connection closed), also when the shard is in the failed state.
func (a *Attachment) OwnerExited(ctx context.Context) (ReleaseResult, error) {
	return a.end(audit.WithCause(ctx, audit.Cause{Kind: audit.CauseOwnerExited, Caller: &a.Owner}), audit.DeallocOwnerExited)
}

func (a *Attachment) end(ctx context.Context, reason string) (res ReleaseResult, err error) {
	err = opErr("release", a.Seal.ShardID, KindNotFound, errors.New("already detached or released"))
	a.once.Do(func() {
		a.s.mu.Lock()
		mine := a.s.shards[a.Seal.ShardID] == a.sh
		a.s.mu.Unlock()
		if mine {
			res, err = a.s.releaseShard(ctx, a.sh, true, reason)
		}
	})
	return res, err
}

// allocReader reads an allocation from its start, for hashing it in place.
type allocReader struct {
	ctx  context.Context
	dev  Device
	a    Allocation
	off  uint64
	size uint64
}

func (r *allocReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	n := min(uint64(len(p)), r.size-r.off)
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if err := r.dev.Read(r.ctx, r.a, r.off, p[:n]); err != nil {
		return 0, err
	}
	r.off += n
	return int(n), nil
}
