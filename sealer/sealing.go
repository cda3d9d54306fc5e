package sealer

// Sealing: loading a file into device memory, hashing it on the way and
// signing its seal.

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vramseal/vramseal/audit"
)

// SealRequest asks for a file to be sealed.
type SealRequest struct {
	ID   string
	Path string
	// File, when set, is read instead of opening Path (which then only
	// names it in messages): a caller that checked where an opened file
	// lies hands over that very file, so nothing can swap it in between.
	// Seal reads it from its current offset and does not close it.
	File *os.File
	GPU  int
	// ExpectedSHA256, when set, is the plain SHA-256 (hex) the file must have.
	ExpectedSHA256 string
	ModelRef       string
	// LeafSize overrides the Sealer's default when not 0.
	LeafSize uint64
	// Progress, when set, is called after each buffer with the bytes done
	// and the total.
	Progress func(done, total uint64)
}

// Seal loads the file into a fresh allocation on the GPU, hashes it in the
// same pass, checks the expected content digest, signs the seal and keeps
// the shard. Nothing stays allocated when it fails.
func (s *Sealer) Seal(ctx context.Context, req SealRequest) (seal Seal, err error) {
	ctx, span := s.tracer.Start(ctx, "vramseal.seal", trace.WithAttributes(
		attribute.String("vramseal.shard.id", req.ID), attribute.Int("gpu.device.index", req.GPU)))
	defer func() { endSpan(span, err) }()

	fail := func(k Kind, err error) (Seal, error) { return Seal{}, opErr("seal", req.ID, k, err) }
	ctx, done, err := s.begin(ctx)
	if err != nil {
		return fail(KindCancelled, err)
	}
	defer done()
	leafSize, expected, err := s.checkRequest(req.ID, req.LeafSize, req.ModelRef, req.ExpectedSHA256)
	if err != nil {
		return fail(KindInvalid, err)
	}
	dev, ok := s.devices[req.GPU]
	if !ok {
		return fail(KindInvalid, fmt.Errorf("no GPU %d (have %v)", req.GPU, s.GPUs()))
	}
	f, size, err := openShardFile(req.Path, req.File)
	if err != nil {
		return fail(KindInvalid, err)
	}
	if req.File == nil {
		defer f.Close()
	}

	if s.cfg.Admission != nil {
		if err := s.cfg.Admission.Admit(ctx, req.GPU); err != nil {
			s.allocationFailed(ctx, req, size, s.available(ctx, dev), audit.ReasonPolicyBlocked)
			return fail(KindPolicy, err)
		}
	}

	sh, err := s.reserve(ctx, req, dev, size)
	if err != nil {
		return Seal{}, err
	}
	alloc, err := dev.Alloc(ctx, size)
	s.mu.Lock()
	s.reserved[req.GPU] -= size
	s.mu.Unlock()
	if err != nil {
		s.forget(req.ID)
		if errors.Is(err, ErrOutOfMemory) {
			s.allocationFailed(ctx, req, size, s.available(ctx, dev), audit.ReasonInsufficientVRAM)
			return fail(KindInsufficientVRAM, err)
		}
		s.allocationFailed(ctx, req, size, s.available(ctx, dev), audit.ReasonDeviceError)
		return fail(KindDevice, err)
	}
	s.mu.Lock()
	s.used[req.GPU] += size
	usedAfter := s.used[req.GPU]
	s.mu.Unlock()
	s.observeAlloc(req.GPU, ResultOK)
	s.emit(ctx, audit.VRAMAllocated{Header: s.header(ctx, req.GPU), ShardID: req.ID, GPUDevice: req.GPU, RequestedBytes: size,
		UsedAfter: usedAfter, AvailableBytes: s.available(ctx, dev)})

	// From here on, a failure frees the allocation and says so.
	undo := func() {
		s.freeAllocation(ctx, req.ID, dev, alloc, audit.DeallocSealFailed, nil)
		s.forget(req.ID)
	}
	d, err := copyAndHash(ctx, f, dev, alloc, size, leafSize, s.bufs, req.Progress)
	if err != nil {
		undo()
		k := KindDevice
		if ctx.Err() != nil {
			k = KindCancelled
		} else if errors.Is(err, errFileChanged) || errors.Is(err, ErrEmpty) {
			k = KindInvalid
		}
		s.observeSeal(req.GPU, ResultError)
		return fail(k, err)
	}
	return s.complete(ctx, req, sh, dev, alloc, size, leafSize, expected, d, OriginSealed, undo)
}

// complete finishes a seal (or an attach) whose bytes are hashed: it checks
// the content digest against the expected one and the allocation against
// the policy, signs the seal, emits vram.sealed and makes the shard
// visible. On failure it calls undo, which frees what was taken.
func (s *Sealer) complete(ctx context.Context, req SealRequest, sh *shard, dev Device, alloc Allocation,

	size, leafSize uint64, expected string, d Digests, origin string, undo func()) (Seal, error) {
	fail := func(k Kind, err error) (Seal, error) { return Seal{}, opErr("seal", req.ID, k, err) }
	if expected != "" && !hmac.Equal([]byte(expected), []byte(d.ContentSHA256)) {
		undo()
		s.observeSeal(req.GPU, audit.ReasonContentDigestMismatch)
		s.emitCritical(ctx, audit.SealVerificationFailed{
			Header: s.header(ctx, req.GPU), ShardID: req.ID, GPUDevice: req.GPU,
			Reason: audit.ReasonContentDigestMismatch, ExpectedDigest: expected, ActualDigest: d.ContentSHA256,
			FirstBadOffset: -1,
		})
		return fail(KindIntegrity, fmt.Errorf("content sha256 is %s, expected %s", d.ContentSHA256, expected))
	}
	if s.cfg.AllocationChecker != nil {
		if err := s.cfg.AllocationChecker.CheckAllocation(ctx, dev, alloc); err != nil {
			undo()
			s.observeSeal(req.GPU, ResultError)
			return fail(KindPolicy, err)
		}
	}

	seal := s.cfg.Signer.Sign(Seal{
		ShardID:       req.ID,
		GPUDevice:     req.GPU,
		VRAMBytes:     size,
		Digest:        d.Digest,
		LeafSize:      leafSize,
		ContentSHA256: d.ContentSHA256,
		ModelRef:      req.ModelRef,
		SealedAt:      s.cfg.Now().UTC().Truncate(time.Microsecond),
		WorkerID:      s.cfg.WorkerID,
	})
	// The event goes out before the shard can be seen (and released), so
	// the audit trail never has vram.deallocated before vram.sealed.
	s.emit(ctx, audit.VRAMSealed{
		Header: s.header(ctx, req.GPU), ShardID: req.ID, GPUDevice: req.GPU, VRAMBytes: size,
		Digest: seal.Digest, ContentSHA256: seal.ContentSHA256, LeafSize: leafSize,
		ModelRef: req.ModelRef, Seal: seal.JSON(), SealSignature: seal.Signature, Origin: origin,
	})
	s.mu.Lock()
	sh.seal, sh.alloc, sh.leaves, sh.sealing, sh.origin = seal, alloc, d.Leaves, false, origin
	s.mu.Unlock()
	s.observeSeal(req.GPU, ResultOK)
	return seal, nil
}

// openShardFile opens path, or takes the already opened f, and checks it is
// a regular, non-empty file. It closes only what it opened, and only on error.
func openShardFile(path string, f *os.File) (*os.File, uint64, error) {
	opened := false
	if f == nil {
		if path == "" {
			return nil, 0, errors.New("no file given")
		}
		var err error
		if f, err = os.Open(path); err != nil {
			return nil, 0, err
		}
		opened = true
	}
	fail := func(err error) (*os.File, uint64, error) {
		if opened {
			f.Close()
		}
		return nil, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	if !st.Mode().IsRegular() {
		return fail(fmt.Errorf("%s is not a regular file", path))
	}
	if st.Size() == 0 {
		return fail(fmt.Errorf("%s: %w", path, ErrEmpty))
	}
	return f, uint64(st.Size()), nil
}

// reserve registers the shard id (refusing duplicates) and reserves size
// bytes on the device, or emits vram.allocation_failed when it has no room.
func (s *Sealer) reserve(ctx context.Context, req SealRequest, dev Device, size uint64) (*shard, error) {
	info, err := dev.MemoryInfo(ctx)
	if err != nil {
		s.allocationFailed(ctx, req, size, 0, audit.ReasonDeviceError)
		return nil, opErr("seal", req.ID, KindDevice, err)
	}
	s.mu.Lock()
	if _, dup := s.shards[req.ID]; dup {
		s.mu.Unlock()
		return nil, opErr("seal", req.ID, KindExists, errors.New("a shard with this id is already sealed"))
	}
	avail := sub(info.Free, s.reserved[req.GPU])
	if size > avail {
		s.mu.Unlock()
		s.allocationFailed(ctx, req, size, avail, audit.ReasonInsufficientVRAM)
		return nil, opErr("seal", req.ID, KindInsufficientVRAM,
			fmt.Errorf("%d bytes requested, %d available on GPU %d", size, avail, req.GPU))
	}
	defer s.mu.Unlock()
	s.reserved[req.GPU] += size
	sctx, cancel := context.WithCancel(context.Background())
	sh := &shard{dev: dev, sealing: true, ctx: sctx, cancel: cancel, verify: make(chan struct{}, 1), leases: map[*Lease]struct{}{}}
	sh.seal.ShardID, sh.seal.GPUDevice = req.ID, req.GPU
	s.shards[req.ID] = sh
	return sh, nil
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// available is the device's free memory less what is reserved.
func (s *Sealer) available(ctx context.Context, dev Device) uint64 {
	info, err := dev.MemoryInfo(ctx)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sub(info.Free, s.reserved[dev.Index()])
}

func (s *Sealer) allocationFailed(ctx context.Context, req SealRequest, size, avail uint64, reason string) {
	alloc, seal := ResultError, ResultError
	switch reason {
	case audit.ReasonInsufficientVRAM:
		alloc, seal = reason, reason
	case audit.ReasonPolicyBlocked:
		alloc = reason
	}
	s.observeAlloc(req.GPU, alloc)
	s.observeSeal(req.GPU, seal)
	s.emit(ctx, audit.VRAMAllocationFailed{
		Header: s.header(ctx, req.GPU), ShardID: req.ID, GPUDevice: req.GPU,
		RequestedBytes: size, AvailableBytes: avail, Reason: reason,
	})
}

// forget drops a shard record (a failed seal, a release).
func (s *Sealer) forget(id string) {
	s.mu.Lock()
	sh := s.shards[id]
	delete(s.shards, id)
	s.mu.Unlock()
	if sh != nil {
		sh.cancel()
	}
}

var errFileChanged = errors.New("file changed size while it was being sealed")

// copyAndHash streams the file into the allocation and hashes it.
func copyAndHash(ctx context.Context, f io.Reader, dev Device, a Allocation, size, leafSize uint64, bufs *BufferPool, progress func(done, total uint64)) (Digests, error) {
	th, err := newTreeHasher(leafSize, bufs)
	if err != nil {
		return Digests{}, err
	}
	defer th.stop() // a no-op once finish ran
	var off uint64
	for off < size {
		if err := ctx.Err(); err != nil {
			return Digests{}, err
		}
		buf, err := th.buffer(ctx)
		if err != nil {
			return Digests{}, err
		}
		want := min(uint64(len(buf)), size-off)
		n, err := io.ReadFull(f, buf[:want])
		if err != nil {
			th.put(buf)
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return Digests{}, errFileChanged
			}
			return Digests{}, fmt.Errorf("reading the file: %w", err)
		}
		if err := dev.Write(ctx, a, off, buf[:n]); err != nil {
			th.put(buf)
			return Digests{}, fmt.Errorf("copying to GPU %d: %w", dev.Index(), err)
		}
		th.submit(buf[:n])
		off += uint64(n)
		if progress != nil {
			progress(off, size)
		}
	}
	// The file must end where it did when it was opened.
	var one [1]byte
	if n, _ := f.Read(one[:]); n > 0 {
		return Digests{}, errFileChanged
	}
	return th.finish()
}

// begin registers a seal (or an attach) in flight: Shutdown cancels the
// context it returns and waits for done. It refuses once Shutdown began.
func (s *Sealer) begin(ctx context.Context) (context.Context, func(), error) {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ctx, nil, errors.New("the agent is shutting down")
	}
	s.seals.Add(1)
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.sealsCtx, cancel)
	return ctx, func() { stop(); cancel(); s.seals.Done() }, nil
}

// checkRequest checks what a seal or an attach names: the shard id, the
// leaf size (the default when 0), the model reference and the expected
// content digest, which it returns normalised.
func (s *Sealer) checkRequest(id string, leafSize uint64, modelRef, expectedSHA256 string) (uint64, string, error) {
	if err := CheckShardID(id); err != nil {
		return 0, "", err
	}
	if leafSize == 0 {
		leafSize = s.cfg.LeafSize
	}
	if err := CheckLeafSize(leafSize); err != nil {
		return 0, "", err
	}
	if err := CheckModelRef(modelRef); err != nil {
		return 0, "", err
	}
	if expectedSHA256 == "" {
		return leafSize, "", nil
	}
	expected, err := ParseSHA256Hex(expectedSHA256)
	return leafSize, expected, err
}
