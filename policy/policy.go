package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/sealer"
)

// ExitCode is the agent's exit status after a violation with
// exit_on_violation (docs/config.md).
const ExitCode = 3

// Config is the policy section of the agent's configuration.
type Config struct {
	// MinMemoryBytes is the least device memory a GPU must have.
	MinMemoryBytes uint64 `yaml:"min_memory_bytes"`
	// MinComputeCapability is the least compute capability, "MAJOR.MINOR"
	// (e.g. "6.0"); empty means no minimum.
	MinComputeCapability string `yaml:"min_compute_capability"`
	// RequireECC refuses GPUs with ECC disabled.
	RequireECC bool `yaml:"require_ecc"`
	// AllowMIG, when false, refuses GPUs in MIG mode.
	AllowMIG bool `yaml:"allow_mig"`
	// ExitOnViolation stops the agent (exit status 3) on a violation
	// instead of blocking the GPU.
	ExitOnViolation bool `yaml:"exit_on_violation"`
}

// Check reports what is wrong with the configuration (a bad
// MinComputeCapability), for the config loader to name the key.
func (c Config) Check() error {
	_, err := c.minCompute()
	return err
}

// minCompute parses MinComputeCapability; "" is no minimum (0.0).
func (c Config) minCompute() (sealer.ComputeCapability, error) {
	if c.MinComputeCapability == "" {
		return sealer.ComputeCapability{}, nil
	}
	return sealer.ParseComputeCapability(c.MinComputeCapability)
}

// GPU is one device as the policy sees it: both backends implement it.
// Implementations must be safe for concurrent use.
type GPU = sealer.GPUDescriber

// MIGSource reports MIG mode by device UUID (NVML). When given, it
// overrides the GPU's own report.
type MIGSource interface {
	MIGMode(ctx context.Context, uuid string) (sealer.MIGMode, error)
}

// Deps are what a Policy is built with.
type Deps struct {
	// GPUs are the devices present.
	GPUs []GPU
	// Emitter receives policy.violation events (required).
	Emitter audit.Emitter
	// WorkerID names the agent in events.
	WorkerID string
	// MIG, when set, reports MIG mode (NVML).
	MIG MIGSource
	// Logger is the operational log (logrus standard logger when nil).
	Logger logrus.FieldLogger
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Violation is one broken rule on one GPU (GPU is -1 when none applies).
type Violation struct {
	GPU       int
	Violation string // audit.Violation* value
	Details   string
	// UUID is the GPU's UUID, when it answered.
	UUID string
}

func (v Violation) String() string {
	return fmt.Sprintf("GPU %d: %s (%s)", v.GPU, v.Violation, v.Details)
}

// BlockedError is what Admit and CheckAllocation return for a GPU the
// policy blocks.
type BlockedError struct {
	GPU        int
	Violations []Violation
}

func (e *BlockedError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.Violation + ": " + v.Details
	}
	return fmt.Sprintf("GPU %d is blocked by the vram_only policy: %s", e.GPU, strings.Join(parts, "; "))
}

// ExitError is returned (and signalled on Exit) for a violation with
// ExitOnViolation: the agent must stop with ExitCode.
type ExitError struct {
	Violations []Violation
}

func (e *ExitError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	return "vram_only policy violated with exit_on_violation, stopping: " + strings.Join(parts, "; ")
}

// ExitCode is the exit status the agent must stop with.
func (e *ExitError) ExitCode() int { return ExitCode }

// Policy enforces the VRAM-only policy. It implements sealer.Admission and
// sealer.AllocationChecker; all methods are safe for concurrent use.
type Policy struct {
	cfg     Config
	minimum sealer.ComputeCapability
	deps    Deps
	gpus    map[int]GPU

	checkMu  sync.Mutex // serialises device checks
	mu       sync.Mutex
	checked  map[int]bool
	blocked  map[int][]Violation
	exit     chan struct{}
	exitErr  *ExitError
	exitOnce sync.Once
}

var (
	_ sealer.Admission         = (*Policy)(nil)
	_ sealer.AllocationChecker = (*Policy)(nil)
)

// New returns a Policy over the GPUs present. A bad MinComputeCapability or
// a missing Emitter is an error.
func New(cfg Config, deps Deps) (*Policy, error) {
	minimum, err := cfg.minCompute()
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	if deps.Emitter == nil {
		return nil, errors.New("policy: an emitter is required")
	}
	if deps.Logger == nil {
		deps.Logger = logrus.StandardLogger()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	p := &Policy{
		cfg: cfg, minimum: minimum, deps: deps, gpus: map[int]GPU{},
		checked: map[int]bool{}, blocked: map[int][]Violation{}, exit: make(chan struct{}),
	}
	for _, g := range deps.GPUs {
		if _, dup := p.gpus[g.Index()]; dup {
			return nil, fmt.Errorf("policy: two GPUs with index %d", g.Index())
		}
		p.gpus[g.Index()] = g
	}
	return p, nil
}

// action is the action_taken of every violation.
func (p *Policy) action() string {
	if p.cfg.ExitOnViolation {
		return audit.ActionAgentStopped
	}
	return audit.ActionSealingBlocked
}

// CheckStartup checks each GPU in use (every GPU present when use is
// empty), emits one policy.violation per broken rule and blocks the GPUs
// that break one. It returns an *ExitError when a rule is broken and
// ExitOnViolation is set, nil otherwise (blocked GPUs are reported by
// Compliant and Ready).
func (p *Policy) CheckStartup(ctx context.Context, use []int) error {
	if len(use) == 0 {
		for i := range p.gpus {
			use = append(use, i)
		}
	}
	use = slices.Clone(use)
	slices.Sort(use)
	use = slices.Compact(use)
	var all []Violation
	for _, gpu := range use {
		all = append(all, p.checkGPU(ctx, gpu, false)...)
	}
	if len(all) > 0 && p.cfg.ExitOnViolation {
		return p.stop(all)
	}
	return nil
}

// checkGPU checks one GPU, records and reports its violations. With once,
// a GPU already checked is not checked again. Checks are serialised so
// that concurrent first seals on a GPU report its violations once.
func (p *Policy) checkGPU(ctx context.Context, gpu int, once bool) []Violation {
	p.checkMu.Lock()
	defer p.checkMu.Unlock()
	if once {
		p.mu.Lock()
		done := p.checked[gpu]
		p.mu.Unlock()
		if done {
			return nil
		}
	}
	vs := p.evaluate(ctx, gpu)
	p.mu.Lock()
	p.checked[gpu] = true
	if len(vs) > 0 {
		p.blocked[gpu] = append(p.blocked[gpu], vs...)
	}
	p.mu.Unlock()
	for _, v := range vs {
		p.report(ctx, v)
	}
	return vs
}

// evaluate returns the rules gpu breaks.
func (p *Policy) evaluate(ctx context.Context, gpu int) []Violation {
	uuid := ""
	v := func(kind, format string, args ...any) Violation {
		return Violation{GPU: gpu, Violation: kind, Details: fmt.Sprintf(format, args...), UUID: uuid}
	}
	g, ok := p.gpus[gpu]
	if !ok {
		have := make([]int, 0, len(p.gpus))
		for i := range p.gpus {
			have = append(have, i)
		}
		slices.Sort(have)
		return []Violation{v(audit.ViolationDeviceMissing, "GPU %d is not present (present: %v)", gpu, have)}
	}
	props, err := g.Properties(ctx)
	if err != nil {
		return []Violation{v(audit.ViolationDeviceMissing, "GPU %d does not answer: %v", gpu, err)}
	}
	uuid = props.UUID
	if p.deps.MIG != nil {
		if m, err := p.deps.MIG.MIGMode(ctx, props.UUID); err != nil {
			p.deps.Logger.WithField(logfield.GPU, gpu).WithError(err).Warn("MIG mode unknown: NVML did not answer")
		} else {
			props.MIG = m
		}
	}
	var out []Violation
	if props.Integrated {
		out = append(out, v(audit.ViolationIntegratedGPU, "%s is an integrated GPU sharing host memory", props.Name))
	}
	if props.Compute.Less(p.minimum) {
		out = append(out, v(audit.ViolationComputeCapabilityTooLow, "compute capability %s is below the required %s",
			props.Compute, p.minimum))
	}
	if props.TotalMemory < p.cfg.MinMemoryBytes {
		out = append(out, v(audit.ViolationInsufficientMemory, "%d bytes of device memory, below the required %d",
			props.TotalMemory, p.cfg.MinMemoryBytes))
	}
	if p.cfg.RequireECC && !props.ECCEnabled {
		out = append(out, v(audit.ViolationECCDisabled, "ECC is disabled and require_ecc is set"))
	}
	if !p.cfg.AllowMIG && props.MIG == sealer.MIGEnabled {
		out = append(out, v(audit.ViolationMIGEnabled, "MIG mode is enabled and allow_mig is false"))
	}
	return out
}

func (p *Policy) report(ctx context.Context, v Violation) {
	action := p.action()
	p.deps.Logger.WithFields(logrus.Fields{logfield.GPU: v.GPU, logfield.Violation: v.Violation, logfield.Action: action}).
		Error("vram_only policy violation: " + v.Details)
	h := audit.NewHeader(p.deps.Now().UTC(), p.deps.WorkerID)
	h.Cause, h.GPUUUID = audit.CauseOr(ctx, audit.CauseStartup), v.UUID
	p.deps.Emitter.Emit(ctx, audit.PolicyViolation{
		Header: h,
		Policy: audit.PolicyVRAMOnly, Violation: v.Violation, Details: v.Details,
		ActionTaken: action, GPUDevice: v.GPU,
	})
}

// stop records the exit and signals Exit.
func (p *Policy) stop(vs []Violation) *ExitError {
	p.exitOnce.Do(func() {
		p.mu.Lock()
		p.exitErr = &ExitError{Violations: vs}
		p.mu.Unlock()
		close(p.exit)
	})
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exitErr
}

// Exit is closed when a violation with ExitOnViolation was found; ExitErr
// then says which. The agent's run loop selects on it and exits with
// ExitCode.
func (p *Policy) Exit() <-chan struct{} { return p.exit }

// ExitErr returns the *ExitError once Exit is closed, nil before.
func (p *Policy) ExitErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exitErr == nil {
		return nil
	}
	return p.exitErr
}

// Admit lets a seal onto gpu unless the policy blocks it. A GPU not
// checked at start-up is checked now, once.
func (p *Policy) Admit(ctx context.Context, gpu int) error {
	if vs := p.checkGPU(ctx, gpu, true); len(vs) > 0 && p.cfg.ExitOnViolation {
		p.stop(vs)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if vs := p.blocked[gpu]; len(vs) > 0 {
		return &BlockedError{GPU: gpu, Violations: slices.Clone(vs)}
	}
	return nil
}

// CheckAllocation asks the driver about a freshly sealed allocation: it must
// be device memory and not managed. A violation is reported, blocks the
// GPU, and refuses the seal.
func (p *Policy) CheckAllocation(ctx context.Context, dev sealer.Device, a sealer.Allocation) error {
	g, ok := p.gpus[dev.Index()]
	if !ok {
		return fmt.Errorf("policy: GPU %d is not known to the policy", dev.Index())
	}
	mem, err := g.AllocationMemory(ctx, a)
	if err != nil {
		return fmt.Errorf("policy: asking GPU %d about the sealed allocation: %w", dev.Index(), err)
	}
	if mem.Type == sealer.MemoryDevice && !mem.Managed {
		return nil
	}
	v := Violation{GPU: dev.Index(), Violation: audit.ViolationNonDeviceMemory,
		Details: fmt.Sprintf("a sealed allocation is %s memory (managed: %v), not plain device memory", mem.Type, mem.Managed)}
	if props, err := g.Properties(ctx); err == nil {
		v.UUID = props.UUID
	}
	p.mu.Lock()
	p.checked[v.GPU] = true
	p.blocked[v.GPU] = append(p.blocked[v.GPU], v)
	vs := slices.Clone(p.blocked[v.GPU])
	p.mu.Unlock()
	p.report(ctx, v)
	if p.cfg.ExitOnViolation {
		p.stop([]Violation{v})
	}
	return &BlockedError{GPU: v.GPU, Violations: vs}
}

// Compliant reports, for every GPU checked so far (and every GPU present),
// whether it meets the policy: the vramseal_policy_compliant{policy="vram_only"}
// gauge. A GPU present but not yet checked counts as compliant.
func (p *Policy) Compliant() map[int]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[int]bool{}
	for i := range p.gpus {
		out[i] = true
	}
	for i := range p.checked {
		out[i] = true
	}
	for i, vs := range p.blocked {
		out[i] = len(vs) == 0
	}
	return out
}

// Violations returns every violation found so far, by GPU.
func (p *Policy) Violations() []Violation {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Violation
	for _, vs := range p.blocked {
		out = append(out, vs...)
	}
	slices.SortStableFunc(out, func(a, b Violation) int { return a.GPU - b.GPU })
	return out
}

// Ready returns nil when no GPU is blocked, else an error naming them (the
// agent is not ready while a GPU it uses breaks the policy).
func (p *Policy) Ready() error {
	vs := p.Violations()
	if len(vs) == 0 {
		return nil
	}
	parts := make([]string, len(vs))
	for i, v := range vs {
		parts[i] = v.String()
	}
	return errors.New("vram_only policy: " + strings.Join(parts, "; "))
}

// GPUsOf returns one backend's devices as the policy's GPUs, in order.
func GPUsOf[D GPU](ds []D) []GPU {
	out := make([]GPU, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}
