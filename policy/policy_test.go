package policy

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

var testNow = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func simGPUs(t *testing.T, n int, props sealer.GPUProperties, per map[int]sealer.GPUProperties) []*simgpu.Device {
	t.Helper()
	ds, err := simgpu.New(simgpu.Config{GPUs: n, MemoryBytes: 8 << 30, Properties: props, PerGPU: per})
	if err != nil {
		t.Fatal(err)
	}
	return ds
}

var strict = Config{MinMemoryBytes: 1 << 30, MinComputeCapability: "7.0", RequireECC: true, AllowMIG: false}

func newPolicy(t *testing.T, cfg Config, ds []*simgpu.Device) (*Policy, *audit.Recorder) {
	t.Helper()
	rec := &audit.Recorder{}
	p, err := New(cfg, Deps{GPUs: GPUsOf(ds), Emitter: rec, WorkerID: "node-a", Now: func() time.Time { return testNow }, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	return p, rec
}

func violations(rec *audit.Recorder) []audit.PolicyViolation {
	var out []audit.PolicyViolation
	for _, ev := range rec.Named(audit.NamePolicyViolation) {
		out = append(out, ev.(audit.PolicyViolation))
	}
	return out
}

// TestStartupViolations: each rule broken on its own simulated GPU 1 (GPU
// 0 stays compliant), with the event's fields, the blocked GPU, the
// compliance map and readiness.
func TestStartupViolations(t *testing.T) {
	good := simgpu.DefaultProperties()
	for _, c := range []struct {
		name      string
		cfg       Config
		props     sealer.GPUProperties
		memory    uint64
		lose      bool
		use       []int
		violation string
		details   string
	}{
		{name: "integrated", cfg: strict, props: with(good, func(p *sealer.GPUProperties) { p.Integrated = true }),
			violation: audit.ViolationIntegratedGPU, details: "integrated GPU"},
		{name: "compute capability", cfg: strict, props: with(good, func(p *sealer.GPUProperties) { p.Compute = sealer.ComputeCapability{Major: 6, Minor: 1} }),
			violation: audit.ViolationComputeCapabilityTooLow, details: "6.1 is below the required 7.0"},
		{name: "compute capability minor", cfg: Config{MinComputeCapability: "8.6"}, props: with(good, func(p *sealer.GPUProperties) { p.Compute = sealer.ComputeCapability{Major: 8} }),
			violation: audit.ViolationComputeCapabilityTooLow, details: "8.0 is below the required 8.6"},
		{name: "ecc", cfg: strict, props: with(good, func(p *sealer.GPUProperties) { p.ECCEnabled = false }),
			violation: audit.ViolationECCDisabled, details: "ECC is disabled"},
		{name: "mig", cfg: strict, props: with(good, func(p *sealer.GPUProperties) { p.MIG = sealer.MIGEnabled }),
			violation: audit.ViolationMIGEnabled, details: "MIG mode is enabled"},
		{name: "device lost", cfg: strict, props: good, lose: true,
			violation: audit.ViolationDeviceMissing, details: "does not answer"},
		{name: "device absent", cfg: strict, props: good, use: []int{0, 1, 7},
			violation: audit.ViolationDeviceMissing, details: "GPU 7 is not present (present: [0 1])"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ds := simGPUs(t, 2, good, map[int]sealer.GPUProperties{1: c.props})
			if c.lose {
				ds[1].SetLost(true)
			}
			p, rec := newPolicy(t, c.cfg, ds)
			if err := p.CheckStartup(context.Background(), c.use); err != nil {
				t.Fatalf("CheckStartup without exit_on_violation: %v", err)
			}
			bad := 1
			if c.use != nil {
				bad = 7
			}
			evs := violations(rec)
			if len(evs) != 1 {
				t.Fatalf("%d policy.violation events, want 1: %+v", len(evs), evs)
			}
			ev := evs[0]
			if ev.Policy != "vram_only" || ev.Violation != c.violation || ev.ActionTaken != audit.ActionSealingBlocked ||
				ev.GPUDevice != bad || ev.WorkerID != "node-a" || !ev.Time.Equal(testNow) || ev.ID == "" ||
				!strings.Contains(ev.Details, c.details) {
				t.Errorf("event %+v: want violation %s on GPU %d with details containing %q", ev, c.violation, bad, c.details)
			}
			if ev.Severity() != audit.SeverityError {
				t.Errorf("severity %v", ev.Severity())
			}
			var blocked *BlockedError
			if err := p.Admit(context.Background(), bad); !errors.As(err, &blocked) || blocked.GPU != bad || blocked.Violations[0].Violation != c.violation {
				t.Errorf("Admit(GPU %d) = %v: want it blocked", bad, err)
			}
			if err := p.Admit(context.Background(), 0); err != nil {
				t.Errorf("Admit(GPU 0) = %v: GPU 0 is compliant", err)
			}
			comp := p.Compliant()
			if comp[0] != true || comp[bad] != false {
				t.Errorf("Compliant() = %v", comp)
			}
			if err := p.Ready(); err == nil || !strings.Contains(err.Error(), c.violation) {
				t.Errorf("Ready() = %v: want not ready naming %s", err, c.violation)
			}
			if p.ExitErr() != nil {
				t.Error("exit signalled without exit_on_violation")
			}
			select {
			case <-p.Exit():
				t.Error("Exit closed without exit_on_violation")
			default:
			}
		})
	}
}

func quiet() *logrus.Logger {
	l := logrus.New()
	l.SetOutput(io.Discard)
	return l
}

// TestInsufficientMemory: a GPU with less memory than min_memory_bytes.
func TestInsufficientMemory(t *testing.T) {
	ds := simGPUs(t, 1, simgpu.DefaultProperties(), nil)
	p, rec := newPolicy(t, Config{MinMemoryBytes: 16 << 30}, ds)
	p.CheckStartup(context.Background(), nil)
	evs := violations(rec)
	if len(evs) != 1 || evs[0].Violation != audit.ViolationInsufficientMemory || evs[0].GPUDevice != 0 ||
		evs[0].Details != "8589934592 bytes of device memory, below the required 17179869184" {
		t.Fatalf("events %+v", evs)
	}
	if p.Admit(context.Background(), 0) == nil || p.Compliant()[0] {
		t.Error("GPU 0 not blocked")
	}
}

func with(p sealer.GPUProperties, f func(*sealer.GPUProperties)) sealer.GPUProperties {
	f(&p)
	return p
}

func TestCompliantGPUs(t *testing.T) {
	ds := simGPUs(t, 3, simgpu.DefaultProperties(), nil)
	p, rec := newPolicy(t, strict, ds)
	if err := p.CheckStartup(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.Events()); n != 0 {
		t.Errorf("%d events for compliant GPUs", n)
	}
	if err := p.Ready(); err != nil {
		t.Error(err)
	}
	if c := p.Compliant(); len(c) != 3 || !c[0] || !c[1] || !c[2] {
		t.Errorf("Compliant() = %v", c)
	}
}

// TestSeveralViolations: every broken rule of one GPU is its own event.
func TestSeveralViolations(t *testing.T) {
	bad := sealer.GPUProperties{Integrated: true, Compute: sealer.ComputeCapability{Major: 5, Minor: 2}, MIG: sealer.MIGEnabled}
	ds := simGPUs(t, 1, bad, nil)
	p, rec := newPolicy(t, Config{MinMemoryBytes: 16 << 30, MinComputeCapability: "6.0", RequireECC: true}, ds)
	p.CheckStartup(context.Background(), nil)
	var got []string
	for _, ev := range violations(rec) {
		got = append(got, ev.Violation)
	}
	want := []string{audit.ViolationIntegratedGPU, audit.ViolationComputeCapabilityTooLow, audit.ViolationInsufficientMemory,
		audit.ViolationECCDisabled, audit.ViolationMIGEnabled}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("violations %v, want %v", got, want)
	}
}

func TestAllowMIG(t *testing.T) {
	ds := simGPUs(t, 1, with(simgpu.DefaultProperties(), func(p *sealer.GPUProperties) { p.MIG = sealer.MIGEnabled }), nil)
	cfg := strict
	cfg.AllowMIG = true
	p, rec := newPolicy(t, cfg, ds)
	p.CheckStartup(context.Background(), nil)
	if len(rec.Events()) != 0 {
		t.Error("MIG refused although allowed")
	}
}

type migSource struct {
	mode sealer.MIGMode
	err  error
}

func (m migSource) MIGMode(context.Context, string) (sealer.MIGMode, error) { return m.mode, m.err }

func TestMIGSource(t *testing.T) {
	for _, c := range []struct {
		src  migSource
		want int
	}{
		{migSource{mode: sealer.MIGEnabled}, 1},
		{migSource{mode: sealer.MIGDisabled}, 0},
		{migSource{err: errors.New("nvml down")}, 0}, // unknown is not a violation
	} {
		ds := simGPUs(t, 1, simgpu.DefaultProperties(), nil)
		rec := &audit.Recorder{}
		p, err := New(strict, Deps{GPUs: GPUsOf(ds), Emitter: rec, MIG: c.src, Logger: quiet()})
		if err != nil {
			t.Fatal(err)
		}
		p.CheckStartup(context.Background(), nil)
		if got := len(violations(rec)); got != c.want {
			t.Errorf("MIG source %+v: %d violations, want %d", c.src, got, c.want)
		}
	}
}

// TestExitOnViolation: the violation is reported with action agent_stopped
// and CheckStartup returns an *ExitError with exit status 3.
func TestExitOnViolation(t *testing.T) {
	ds := simGPUs(t, 2, simgpu.DefaultProperties(), map[int]sealer.GPUProperties{1: with(simgpu.DefaultProperties(), func(p *sealer.GPUProperties) { p.ECCEnabled = false })})
	cfg := strict
	cfg.ExitOnViolation = true
	p, rec := newPolicy(t, cfg, ds)
	err := p.CheckStartup(context.Background(), nil)
	var exit *ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 || len(exit.Violations) != 1 || exit.Violations[0].Violation != audit.ViolationECCDisabled {
		t.Fatalf("CheckStartup = %v: want an ExitError with exit status 3", err)
	}
	if !strings.Contains(err.Error(), "GPU 1: ecc_disabled") {
		t.Errorf("message %q", err)
	}
	evs := violations(rec)
	if len(evs) != 1 || evs[0].ActionTaken != audit.ActionAgentStopped {
		t.Errorf("events %+v: want one with action agent_stopped", evs)
	}
	select {
	case <-p.Exit():
	default:
		t.Error("Exit not closed")
	}
	if !errors.As(p.ExitErr(), &exit) {
		t.Error("ExitErr is not the ExitError")
	}
}

// TestNonDeviceMemoryThroughSealer: with the simulated GPU reporting managed
// memory, a seal through the sealer is refused after the copy, its
// allocation freed, the violation reported, the GPU blocked for later seals,
// and (with exit_on_violation) the exit signalled.
func TestNonDeviceMemoryThroughSealer(t *testing.T) {
	for _, exit := range []bool{false, true} {
		ds := simGPUs(t, 2, simgpu.DefaultProperties(), nil)
		cfg := strict
		cfg.ExitOnViolation = exit
		p, rec := newPolicy(t, cfg, ds)
		ctx := context.Background()
		if err := p.CheckStartup(ctx, nil); err != nil {
			t.Fatal(err)
		}
		signer, _ := sealer.NewSigner([]byte("0123456789abcdef0123456789abcdef"))
		s, err := sealer.New(sealer.Config{WorkerID: "node-a", Devices: simgpu.Devices(ds), Signer: signer, Emitter: rec,
			Admission: p, AllocationChecker: p})
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "shard")
		os.WriteFile(path, []byte(strings.Repeat("weights", 1000)), 0o600)
		if _, err := s.Seal(ctx, sealer.SealRequest{ID: "ok", Path: path, GPU: 1}); err != nil {
			t.Fatalf("seal on a compliant GPU: %v", err)
		}
		ds[1].SetManagedMemory(true)
		_, err = s.Seal(ctx, sealer.SealRequest{ID: "managed", Path: path, GPU: 1})
		if sealer.KindOf(err) != sealer.KindPolicy {
			t.Fatalf("seal into managed memory: %v", err)
		}
		if ds[1].LiveAllocations() != 1 {
			t.Errorf("%d live allocations: the refused seal's memory was not freed", ds[1].LiveAllocations())
		}
		evs := violations(rec)
		wantAction := audit.ActionSealingBlocked
		if exit {
			wantAction = audit.ActionAgentStopped
		}
		if len(evs) != 1 || evs[0].Violation != audit.ViolationNonDeviceMemory || evs[0].GPUDevice != 1 || evs[0].ActionTaken != wantAction {
			t.Fatalf("events %+v", evs)
		}
		// The GPU is blocked now: the next seal is refused before allocating.
		_, err = s.Seal(ctx, sealer.SealRequest{ID: "later", Path: path, GPU: 1})
		var blocked *BlockedError
		if sealer.KindOf(err) != sealer.KindPolicy || !errors.As(err, &blocked) {
			t.Errorf("seal on the blocked GPU: %v", err)
		}
		failed := rec.Named(audit.NameVRAMAllocationFailed)
		if len(failed) != 1 || failed[0].(audit.VRAMAllocationFailed).Reason != audit.ReasonPolicyBlocked {
			t.Errorf("allocation_failed events %+v", failed)
		}
		if c := p.Compliant(); c[1] || !c[0] {
			t.Errorf("Compliant() = %v", c)
		}
		if (p.ExitErr() != nil) != exit {
			t.Errorf("exit_on_violation=%v: ExitErr() = %v", exit, p.ExitErr())
		}
	}
}

// TestAdmitChecksUncheckedGPU: a GPU left out at start-up is checked at its
// first seal.
func TestAdmitChecksUncheckedGPU(t *testing.T) {
	ds := simGPUs(t, 2, simgpu.DefaultProperties(), map[int]sealer.GPUProperties{1: with(simgpu.DefaultProperties(), func(p *sealer.GPUProperties) { p.Integrated = true })})
	p, rec := newPolicy(t, strict, ds)
	p.CheckStartup(context.Background(), []int{0})
	if len(rec.Events()) != 0 {
		t.Fatal("GPU 1 was checked although not in use")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := p.Admit(context.Background(), 1); err == nil {
				t.Error("integrated GPU admitted")
			}
		})
	}
	wg.Wait()
	if n := len(violations(rec)); n != 1 {
		t.Errorf("%d events: the GPU must be checked (and reported) once", n)
	}
}

func TestNew(t *testing.T) {
	ds := simGPUs(t, 1, simgpu.DefaultProperties(), nil)
	if _, err := New(Config{MinComputeCapability: "six"}, Deps{GPUs: GPUsOf(ds), Emitter: &audit.Recorder{}}); err == nil {
		t.Error("bad compute capability accepted")
	}
	if _, err := New(Config{}, Deps{GPUs: GPUsOf(ds)}); err == nil {
		t.Error("no emitter accepted")
	}
	if _, err := New(Config{}, Deps{GPUs: append(GPUsOf(ds), GPUsOf(ds)...), Emitter: &audit.Recorder{}}); err == nil {
		t.Error("duplicate GPU index accepted")
	}
}
