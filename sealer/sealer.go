package sealer

import (
	"context"
	"crypto/hmac"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vramseal/vramseal/audit"
)

// Results counted by Observer and written in VerifyResult.Result.
const (
	ResultOK        = "ok"
	ResultError     = "error"
	ResultCancelled = "cancelled"
)

// Observer receives the outcome of every operation, for metrics. Calls are
// made synchronously from the operation's goroutine and must be cheap.
type Observer interface {
	// SealDone: result is ok, content_digest_mismatch, insufficient_vram or error.
	SealDone(gpu int, result string)
	// AllocationDone: result is ok, insufficient_vram or error.
	AllocationDone(gpu int, result string)
	// VerificationDone: result is ok, digest_mismatch, signature_invalid,
	// allocation_missing or error; bytes is what was hashed.
	VerificationDone(gpu int, result string, d time.Duration, bytes uint64)
}

// Config is what a Sealer is built from.
type Config struct {
	// WorkerID names this agent in seals and events.
	WorkerID string
	// Devices are the GPUs, indexed by their Index.
	Devices []Device
	// Signer signs and checks seal records.
	Signer *Signer
	// Emitter receives the audit events.
	Emitter audit.Emitter
	// LeafSize is the default leaf size (DefaultLeafSize when 0).
	LeafSize uint64
	// VerifyMode is where shards are hashed at verification (VerifyHost when "").
	VerifyMode VerifyMode
	// Workers is the number of goroutines hashing at verification
	// (GOMAXPROCS when 0).
	Workers int
	// Buffers holds the read-back buffers of verifications on the host and
	// the read buffers of seals, within its byte budget; share one pool
	// between every Sealer of a process. New makes its own, of
	// DefaultBufferBudget, when nil.
	Buffers *BufferPool
	// MaxVerifyInFlightPerGPU bounds the verifications reading one GPU at
	// the same time (DefaultMaxVerifyInFlightPerGPU when 0). Those beyond
	// wait, holding no buffer, until one ends or their context does.
	MaxVerifyInFlightPerGPU int
	// CriticalWait bounds the wait for a CRITICAL record to be durable
	// (2s when 0).
	CriticalWait time.Duration
	// Admission, when set, is asked before every seal.
	Admission Admission
	// AllocationChecker, when set, is asked about every sealed allocation.
	AllocationChecker AllocationChecker
	// Observer, when set, is told every outcome.
	Observer Observer
	// TracerProvider makes the spans around operations (no-op when nil).
	TracerProvider trace.TracerProvider
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// LeaseWait is how long Shutdown waits for consumers to close their
	// leases before it revokes them (0: it does not wait).
	LeaseWait time.Duration
}

// Sealer seals shards into device memory, verifies and releases them. All
// methods are safe for concurrent use.
type Sealer struct {
	cfg     Config
	devices map[int]Device
	tracer  trace.Tracer
	log     logrus.FieldLogger
	bufs    *BufferPool
	// gpuSlots holds one token per verification reading each GPU.
	gpuSlots map[int]chan struct{}

	mu       sync.Mutex
	shards   map[string]*shard
	reserved map[int]uint64 // bytes promised to seals not yet allocated
	used     map[int]uint64 // bytes held by this agent's allocations
	closing  bool           // Shutdown began: no new seals

	// seals counts the seals in flight; stopSeals cancels them (Shutdown).
	seals     sync.WaitGroup
	sealsCtx  context.Context
	stopSeals context.CancelFunc
}

// shard is one sealed (or being sealed) shard.
type shard struct {
	seal   Seal
	dev    Device
	alloc  Allocation
	leaves []LeafHash

	ctx    context.Context // cancelled when the shard is released
	cancel context.CancelFunc
	verify chan struct{}       // holds a token while a verification is in flight
	mem    sync.RWMutex        // read-held by Memory's callers; Release waits for them
	leases map[*Lease]struct{} // open consumer leases; guarded by Sealer.mu
	origin string              // OriginSealed or OriginAttached; set when sealed

	// guarded by Sealer.mu
	sealing     bool
	failed      bool
	lastOK      time.Time
	lastChecked time.Time
	lastResult  string
}

// New returns a Sealer. Devices, Signer and Emitter are required.
func New(cfg Config) (*Sealer, error) {
	if len(cfg.Devices) == 0 {
		return nil, errors.New("sealer: no devices")
	}
	if cfg.Signer == nil || cfg.Emitter == nil {
		return nil, errors.New("sealer: signer and emitter are required")
	}
	if cfg.LeafSize == 0 {
		cfg.LeafSize = DefaultLeafSize
	}
	if err := CheckLeafSize(cfg.LeafSize); err != nil {
		return nil, fmt.Errorf("sealer: %w", err)
	}
	switch cfg.VerifyMode {
	case "":
		cfg.VerifyMode = VerifyHost
	case VerifyHost:
	case VerifyDevice:
		for _, d := range cfg.Devices {
			if _, ok := d.(LeafDigester); !ok {
				return nil, fmt.Errorf("sealer: verify mode %q: GPU %d cannot hash on the device", cfg.VerifyMode, d.Index())
			}
		}
	default:
		return nil, fmt.Errorf("sealer: unknown verify mode %q (want host or gpu)", cfg.VerifyMode)
	}
	if cfg.Workers <= 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.MaxVerifyInFlightPerGPU < 0 {
		return nil, fmt.Errorf("sealer: max verifications in flight per GPU %d: want 1 or more (0: the default)", cfg.MaxVerifyInFlightPerGPU)
	}
	if cfg.MaxVerifyInFlightPerGPU == 0 {
		cfg.MaxVerifyInFlightPerGPU = DefaultMaxVerifyInFlightPerGPU
	}
	if cfg.Buffers == nil {
		var err error
		if cfg.Buffers, err = NewBufferPool(DefaultBufferBudget); err != nil {
			return nil, err
		}
	}
	if cfg.CriticalWait <= 0 {
		cfg.CriticalWait = 2 * time.Second
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = noop.NewTracerProvider()
	}
	if cfg.Logger == nil {
		cfg.Logger = logrus.StandardLogger()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Sealer{
		cfg:      cfg,
		devices:  map[int]Device{},
		tracer:   cfg.TracerProvider.Tracer("github.com/vramseal/vramseal/sealer"),
		log:      cfg.Logger,
		bufs:     cfg.Buffers,
		gpuSlots: map[int]chan struct{}{},
		shards:   map[string]*shard{},
		reserved: map[int]uint64{},
		used:     map[int]uint64{},
	}
	s.sealsCtx, s.stopSeals = context.WithCancel(context.Background())
	for _, d := range cfg.Devices {
		if _, dup := s.devices[d.Index()]; dup {
			return nil, fmt.Errorf("sealer: two devices with index %d", d.Index())
		}
		s.devices[d.Index()] = d
		s.gpuSlots[d.Index()] = make(chan struct{}, cfg.MaxVerifyInFlightPerGPU)
	}
	return s, nil
}

// MaxVerifyInFlightPerGPU is the most verifications reading one GPU at the
// same time (verify.max_in_flight_per_gpu).
func (s *Sealer) MaxVerifyInFlightPerGPU() int { return s.cfg.MaxVerifyInFlightPerGPU }

// Buffers is the pool the Sealer takes its read buffers from.
func (s *Sealer) Buffers() *BufferPool { return s.bufs }

// WorkerID returns the worker id this Sealer seals under.
func (s *Sealer) WorkerID() string { return s.cfg.WorkerID }

// VerifyMode returns where this Sealer hashes at verification.
func (s *Sealer) VerifyMode() VerifyMode { return s.cfg.VerifyMode }

// GPUs returns the device indexes, ascending.
func (s *Sealer) GPUs() []int {
	out := make([]int, 0, len(s.devices))
	for i := range s.devices {
		out = append(out, i)
	}
	slices.Sort(out)
	return out
}

func (s *Sealer) header() audit.Header {
	return audit.NewHeader(s.cfg.Now().UTC(), s.cfg.WorkerID)
}

func (s *Sealer) emit(ctx context.Context, ev audit.Event) audit.Receipt {
	return s.cfg.Emitter.Emit(ctx, ev)
}

// emitCritical emits a CRITICAL event and waits, bounded, until it is
// durable. It reports whether it was; a failure is logged, never returned.
func (s *Sealer) emitCritical(ctx context.Context, ev audit.Event) bool {
	r := s.emit(ctx, ev)
	if err := audit.WaitDurable(ctx, r, s.cfg.CriticalWait); err != nil {
		lvl := logrus.WarnLevel
		if errors.Is(err, audit.ErrNotDurable) {
			lvl = logrus.DebugLevel
		}
		s.log.WithFields(logrus.Fields{"event": ev.Name(), "event_id": ev.Head().ID}).WithError(err).
			Log(lvl, "critical audit record not confirmed durable")
		return false
	}
	return true
}

func (s *Sealer) observeSeal(gpu int, result string) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.SealDone(gpu, result)
	}
}

func (s *Sealer) observeAlloc(gpu int, result string) {
	if s.cfg.Observer != nil {
		s.cfg.Observer.AllocationDone(gpu, result)
	}
}

func (s *Sealer) observeVerify(gpu int, result string, d time.Duration, bytes uint64) {
	if s.cfg.Observer != nil && result != ResultCancelled {
		if result == audit.ReasonReadError {
			result = ResultError
		}
		s.cfg.Observer.VerificationDone(gpu, result, d, bytes)
	}
}

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
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return fail(KindCancelled, errors.New("the agent is shutting down"))
	}
	s.seals.Add(1)
	s.mu.Unlock()
	defer s.seals.Done()
	// Shutdown cancels seals in flight; each then frees what it took.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.sealsCtx, cancel)()

	if err := CheckShardID(req.ID); err != nil {
		return fail(KindInvalid, err)
	}
	leafSize := req.LeafSize
	if leafSize == 0 {
		leafSize = s.cfg.LeafSize
	}
	if err := CheckLeafSize(leafSize); err != nil {
		return fail(KindInvalid, err)
	}
	if err := CheckModelRef(req.ModelRef); err != nil {
		return fail(KindInvalid, err)
	}
	expected := ""
	if req.ExpectedSHA256 != "" {
		if expected, err = ParseSHA256Hex(req.ExpectedSHA256); err != nil {
			return fail(KindInvalid, err)
		}
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
			s.allocationFailed(ctx, req, size, 0, audit.ReasonPolicyBlocked)
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
	s.emit(ctx, audit.VRAMAllocated{Header: s.header(), ShardID: req.ID, GPUDevice: req.GPU, RequestedBytes: size, UsedAfter: usedAfter})

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
			Header: s.header(), ShardID: req.ID, GPUDevice: req.GPU,
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
		Header: s.header(), ShardID: req.ID, GPUDevice: req.GPU, VRAMBytes: size,
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
	result := ResultError
	if reason == audit.ReasonInsufficientVRAM {
		result = reason
	}
	if reason != audit.ReasonPolicyBlocked {
		s.observeAlloc(req.GPU, result)
	}
	s.observeSeal(req.GPU, result)
	s.emit(ctx, audit.VRAMAllocationFailed{
		Header: s.header(), ShardID: req.ID, GPUDevice: req.GPU,
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

// freeAllocation frees an allocation and emits vram.deallocated. A device
// that reports the allocation already gone (lost, reset) counts as freed;
// the failure is logged.
func (s *Sealer) freeAllocation(ctx context.Context, id string, dev Device, a Allocation, reason string, stillMappedBy []int64) uint64 {
	size := a.Size()
	if err := dev.Free(context.WithoutCancel(ctx), a); err != nil {
		s.log.WithFields(logrus.Fields{"shard_id": id, "gpu": dev.Index()}).WithError(err).
			Warn("device reported an error freeing the shard's memory; counting it as freed")
	}
	s.mu.Lock()
	s.used[dev.Index()] = sub(s.used[dev.Index()], size)
	remaining := s.used[dev.Index()]
	s.mu.Unlock()
	s.emit(ctx, audit.VRAMDeallocated{Header: s.header(), ShardID: id, GPUDevice: dev.Index(), FreedBytes: size, RemainingUsed: remaining,
		Reason: reason, StillMappedBy: stillMappedBy})
	return remaining
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

// VerifyResult is the outcome of one verification.
type VerifyResult struct {
	ShardID   string `json:"shard_id"`
	GPUDevice int    `json:"gpu_device"`
	// Result is ok, digest_mismatch, signature_invalid, allocation_missing,
	// read_error or cancelled.
	Result         string        `json:"result"`
	ExpectedDigest string        `json:"expected_digest"`
	ActualDigest   string        `json:"actual_digest,omitempty"`
	FirstBadOffset int64         `json:"first_bad_offset"` // -1 when no chunk was compared bad
	BadChunks      int64         `json:"bad_chunks"`
	Bytes          uint64        `json:"bytes"`
	Duration       time.Duration `json:"duration_ns"`
	// EventID is the id of the audit event that reported the result.
	EventID string `json:"event_id,omitempty"`
	// AuditDurable is true when a CRITICAL event's record was confirmed
	// durable before Verify returned (always false for success).
	AuditDurable bool `json:"audit_durable"`
}

// Intact reports whether the shard matched its seal.
func (r VerifyResult) Intact() bool { return r.Result == ResultOK }

// Verify re-reads a shard's VRAM and checks it against its seal. A failed
// verification is returned as a result and as an *Error of KindIntegrity
// (or KindDevice for a read error, KindCancelled when the shard was released
// meanwhile); every failure but a cancellation emits a CRITICAL event.
func (s *Sealer) Verify(ctx context.Context, id string) (VerifyResult, error) {
	s.mu.Lock()
	sh, ok := s.shards[id]
	if ok && sh.sealing {
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		return VerifyResult{ShardID: id, Result: ResultError}, opErr("verify", id, KindNotFound, errors.New("no such shard"))
	}
	return s.verify(ctx, sh, nil)
}

// VerifySeal checks a seal record presented by a consumer (verify-before-use):
// its signature, then that it is the record of a shard this agent holds,
// field for field, then that shard's VRAM.
func (s *Sealer) VerifySeal(ctx context.Context, presented Seal) (VerifyResult, error) {
	s.mu.Lock()
	sh, ok := s.shards[presented.ShardID]
	if ok && sh.sealing {
		ok = false
	}
	s.mu.Unlock()
	if !ok {
		if !s.cfg.Signer.Check(presented) {
			return s.rejectPresented(ctx, presented, audit.ReasonSignatureInvalid, "presented seal record's signature is not valid")
		}
		return s.rejectPresented(ctx, presented, audit.ReasonAllocationMissing, "presented seal record is genuine but its shard is not held by this agent")
	}
	return s.verify(ctx, sh, &presented)
}

// rejectPresented reports a presented record that names no shard held here.
func (s *Sealer) rejectPresented(ctx context.Context, p Seal, reason, msg string) (VerifyResult, error) {
	_, span := s.tracer.Start(ctx, "vramseal.verify", trace.WithAttributes(attribute.String("vramseal.shard.id", p.ShardID)))
	defer span.End()
	span.SetStatus(codes.Error, reason)
	ev := audit.SealVerificationFailed{
		Header: s.header(), ShardID: p.ShardID, GPUDevice: p.GPUDevice, Reason: reason,
		ExpectedDigest: p.Digest, FirstBadOffset: -1,
	}
	ctx = trace.ContextWithSpan(ctx, span)
	durable := s.emitCritical(ctx, ev)
	s.observeVerify(p.GPUDevice, reason, 0, 0)
	res := VerifyResult{ShardID: p.ShardID, GPUDevice: p.GPUDevice, Result: reason, ExpectedDigest: p.Digest,
		FirstBadOffset: -1, EventID: ev.ID, AuditDurable: durable}
	return res, opErr("verify", p.ShardID, KindIntegrity, errors.New(msg))
}

// verify checks one shard; presented is a consumer's record or nil.
func (s *Sealer) verify(ctx context.Context, sh *shard, presented *Seal) (res VerifyResult, err error) {
	seal := sh.seal
	// One verification of a shard at a time; the others wait here, holding
	// nothing, and give up when their caller does or the shard goes.
	select {
	case sh.verify <- struct{}{}:
		defer func() { <-sh.verify }()
	case <-ctx.Done():
		res = VerifyResult{ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Result: ResultCancelled, ExpectedDigest: seal.Digest, FirstBadOffset: -1}
		return res, opErr("verify", seal.ShardID, KindCancelled, ctx.Err())
	case <-sh.ctx.Done():
		res = VerifyResult{ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Result: ResultCancelled, ExpectedDigest: seal.Digest, FirstBadOffset: -1}
		return res, opErr("verify", seal.ShardID, KindCancelled, errors.New("shard was released"))
	}

	ctx, span := s.tracer.Start(ctx, "vramseal.verify", trace.WithAttributes(
		attribute.String("vramseal.shard.id", seal.ShardID), attribute.Int("gpu.device.index", seal.GPUDevice)))
	defer func() { endSpan(span, err) }()

	// The shard's own context ends when it is released: stop reading then.
	vctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(sh.ctx, cancel)
	defer stop()

	start := time.Now()
	res = VerifyResult{ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, ExpectedDigest: seal.Digest, FirstBadOffset: -1}
	if sh.ctx.Err() != nil {
		res.Result = ResultCancelled
		return res, opErr("verify", seal.ShardID, KindCancelled, errors.New("shard was released"))
	}

	var reason, actual string
	var leaves []LeafHash
	// badPresented: only the consumer's record is wrong; it says nothing
	// about the shard, whose state is left as it is.
	badPresented := false
	switch {
	case !s.cfg.Signer.Check(seal):
		reason = audit.ReasonSignatureInvalid
	case presented != nil && !(s.cfg.Signer.Check(*presented) && sameSeal(*presented, seal)):
		reason = audit.ReasonSignatureInvalid
		res.ExpectedDigest = presented.Digest
		badPresented = true
	default:
		leaves, err = s.hashShard(vctx, sh)
		switch {
		case err != nil && sh.ctx.Err() != nil:
			res.Result, res.Duration = ResultCancelled, time.Since(start)
			return res, opErr("verify", seal.ShardID, KindCancelled, errors.New("shard was released during verification"))
		case err != nil && ctx.Err() != nil:
			res.Result, res.Duration = ResultCancelled, time.Since(start)
			return res, opErr("verify", seal.ShardID, KindCancelled, ctx.Err())
		case errors.Is(err, ErrAllocationMissing):
			reason = audit.ReasonAllocationMissing
		case err != nil:
			reason = audit.ReasonReadError
		default:
			root := TreeRoot(seal.VRAMBytes, seal.LeafSize, leaves)
			actual = FormatDigest(root)
			res.ActualDigest = actual
			want, _ := ParseDigest(seal.Digest)
			if !hmac.Equal(root[:], want[:]) {
				reason = audit.ReasonDigestMismatch
				res.FirstBadOffset, res.BadChunks = compareLeaves(sh.leaves, leaves, seal.LeafSize)
			}
		}
	}
	res.Duration = time.Since(start)
	if reason == "" {
		res.Bytes = seal.VRAMBytes
	}
	now := s.cfg.Now()

	if reason == "" {
		s.mu.Lock()
		sh.lastOK, sh.lastChecked, sh.lastResult = now, now, ResultOK
		s.mu.Unlock()
		ev := audit.SealVerified{Header: s.header(), ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Digest: seal.Digest}
		s.emit(ctx, ev)
		res.Result, res.EventID = ResultOK, ev.ID
		s.observeVerify(seal.GPUDevice, ResultOK, res.Duration, seal.VRAMBytes)
		return res, nil
	}

	if !badPresented {
		s.mu.Lock()
		sh.lastChecked, sh.lastResult = now, reason
		if reason != audit.ReasonReadError {
			sh.failed = true // sticky: a shard once found altered stays failed
		}
		s.mu.Unlock()
	}
	ev := audit.SealVerificationFailed{
		Header: s.header(), ShardID: seal.ShardID, GPUDevice: seal.GPUDevice, Reason: reason,
		ExpectedDigest: res.ExpectedDigest, ActualDigest: actual,
		FirstBadOffset: res.FirstBadOffset, BadChunks: res.BadChunks,
	}
	res.Result, res.EventID = reason, ev.ID
	res.AuditDurable = s.emitCritical(ctx, ev)
	s.observeVerify(seal.GPUDevice, reason, res.Duration, res.Bytes)
	kind := KindIntegrity
	msg := reason
	switch reason {
	case audit.ReasonReadError:
		kind = KindDevice
		msg = fmt.Sprintf("reading the shard back failed: %v", err)
	case audit.ReasonAllocationMissing:
		msg = fmt.Sprintf("the shard's allocation is missing: %v", err)
	case audit.ReasonDigestMismatch:
		msg = fmt.Sprintf("VRAM does not match the seal: %d chunk(s) of %d bytes differ, the first at offset %d",
			res.BadChunks, seal.LeafSize, res.FirstBadOffset)
	case audit.ReasonSignatureInvalid:
		msg = "the seal record's signature or fields do not match"
	}
	return res, opErr("verify", seal.ShardID, kind, errors.New(msg))
}

// compareLeaves returns the offset of the first differing leaf and how many
// differ.
func compareLeaves(want, got []LeafHash, leafSize uint64) (first int64, bad int64) {
	first = -1
	for i := range want {
		if i >= len(got) || !hmac.Equal(want[i][:], got[i][:]) {
			if first < 0 {
				first = int64(uint64(i) * leafSize)
			}
			bad++
		}
	}
	return first, bad
}

// hashShard computes the shard's leaves, on the device or on the host,
// once one of the GPU's verification slots is free.
func (s *Sealer) hashShard(ctx context.Context, sh *shard) ([]LeafHash, error) {
	slots := s.gpuSlots[sh.dev.Index()]
	select {
	case slots <- struct{}{}:
		defer func() { <-slots }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	n, l := sh.seal.VRAMBytes, sh.seal.LeafSize
	if s.cfg.VerifyMode == VerifyDevice {
		if ld, ok := sh.dev.(LeafDigester); ok {
			// The device hashes in place; only digests cross the bus. The
			// budget is taken for the whole shard at once.
			if err := pace(ctx, n); err != nil {
				return nil, err
			}
			leaves, err := ld.LeafDigests(ctx, sh.alloc, n, l)
			if err == nil && uint64(len(leaves)) != LeafCount(n, l) {
				err = fmt.Errorf("device returned %d leaf digests, want %d", len(leaves), LeafCount(n, l))
			}
			return leaves, err
		}
	}
	return readBack(ctx, sh.dev, sh.alloc, n, l, s.cfg.Workers, s.bufs)
}

// VerifyAll verifies every sealed shard, one after the other, and returns
// every result; the error is the first failure's (nil when all are intact).
func (s *Sealer) VerifyAll(ctx context.Context) ([]VerifyResult, error) {
	var out []VerifyResult
	var first error
	for _, st := range s.List() {
		r, err := s.Verify(ctx, st.Seal.ShardID)
		if KindOf(err) == KindNotFound || KindOf(err) == KindCancelled {
			continue // released meanwhile
		}
		out = append(out, r)
		if err != nil && first == nil {
			first = err
		}
	}
	return out, first
}

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
	s.mu.Lock()
	sh, ok := s.shards[id]
	s.mu.Unlock()
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
	sh, ok := s.shards[id]
	if !ok || sh.sealing {
		return ShardStatus{}, opErr("status", id, KindNotFound, errors.New("no such shard"))
	}
	return sh.status(), nil
}

// status must be called with Sealer.mu held.
func (sh *shard) status() ShardStatus {
	st := ShardStatus{Seal: sh.seal, State: StateSealed, LastVerifiedAt: sh.lastOK, LastCheckedAt: sh.lastChecked, LastResult: sh.lastResult,
		Leases: sh.holders(), Origin: sh.origin}
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
	sh, ok := s.shards[id]
	if ok && sh.sealing {
		ok = false
	}
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

// Shutdown stops the Sealer for a graceful exit: new seals and opens are
// refused, seals in flight are cancelled (each frees its allocation, with
// its vram.deallocated event) and waited for, consumers get up to
// LeaseWait to close their leases, then every shard is released (leases
// still open are revoked). ctx bounds the waits.
func (s *Sealer) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	s.stopSeals()
	done := make(chan struct{})
	go func() { s.seals.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(fmt.Errorf("seals still in flight at shutdown: %w", ctx.Err()), s.ReleaseAll(ctx))
	}
	if n := s.Leases(); n > 0 && s.cfg.LeaseWait > 0 {
		s.log.WithField("leases", n).Infof("waiting up to %s for consumers to close their leases", s.cfg.LeaseWait)
		wctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseWait)
		err := s.WaitUnleased(wctx)
		cancel()
		if err != nil {
			s.log.WithField("leases", s.Leases()).Warn("consumers still hold leases: revoking them")
		}
	}
	return s.ReleaseAll(ctx)
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

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
