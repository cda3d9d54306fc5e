package sealer

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
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
	// AllocationDone: result is ok, insufficient_vram, policy_blocked or error.
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
	uuids   map[int]string // each GPU's UUID, for the events that name it
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
	owner  *audit.Caller       // the process that attached the memory (OriginAttached)

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
		uuids:    map[int]string{},
	}
	s.sealsCtx, s.stopSeals = context.WithCancel(context.Background())
	for _, d := range cfg.Devices {
		if _, dup := s.devices[d.Index()]; dup {
			return nil, fmt.Errorf("sealer: two devices with index %d", d.Index())
		}
		s.devices[d.Index()] = d
		s.gpuSlots[d.Index()] = make(chan struct{}, cfg.MaxVerifyInFlightPerGPU)
		if g, ok := d.(GPUDescriber); ok {
			if p, err := g.Properties(context.Background()); err == nil {
				s.uuids[d.Index()] = p.UUID
			}
		}
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

// header is the header of an event about gpu: the cause ctx carries (an
// operation without one was asked for through the Go API, recorded as
// api), and the GPU's UUID.
func (s *Sealer) header(ctx context.Context, gpu int) audit.Header {
	h := audit.NewHeader(s.cfg.Now().UTC(), s.cfg.WorkerID)
	h.Cause = audit.CauseOr(ctx, audit.CauseAPI)
	h.GPUUUID = s.uuids[gpu]
	return h
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
		s.log.WithFields(logrus.Fields{logfield.Event: ev.Name(), logfield.EventID: ev.Head().ID}).WithError(err).
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

// Shutdown stops the Sealer for a graceful exit: new seals and opens are
// refused, seals in flight are cancelled (each frees its allocation, with
// its vram.deallocated event) and waited for, consumers get up to
// LeaseWait to close their leases, then every shard is released (leases
// still open are revoked). ctx bounds the waits.
func (s *Sealer) Shutdown(ctx context.Context) error {
	ctx = audit.WithCause(ctx, audit.Cause{Kind: audit.CauseShutdown})
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
		s.log.WithField(logfield.Leases, n).Infof("waiting up to %s for consumers to close their leases", s.cfg.LeaseWait)
		wctx, cancel := context.WithTimeout(ctx, s.cfg.LeaseWait)
		err := s.WaitUnleased(wctx)
		cancel()
		if err != nil {
			s.log.WithField(logfield.Leases, s.Leases()).Warn("consumers still hold leases: revoking them")
		}
	}
	return s.ReleaseAll(ctx)
}

// sealedLocked returns the shard of id once it is sealed (not while it is
// being sealed). Call it with s.mu held.
func (s *Sealer) sealedLocked(id string) (*shard, bool) {
	sh, ok := s.shards[id]
	return sh, ok && !sh.sealing
}

// lookup returns the shard of id once it is sealed.
func (s *Sealer) lookup(id string) (*shard, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sealedLocked(id)
}

func endSpan(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
