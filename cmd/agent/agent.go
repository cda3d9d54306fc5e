package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/client"
	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/handoff"
	"github.com/vramseal/vramseal/internal/logfield"
	"github.com/vramseal/vramseal/internal/secret"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// agent holds the running agent's parts. newAgent builds them; run.go
// starts and stops them. The metrics wiring (newRegistry) reads from here.
type agent struct {
	cfg      *config.Config
	reloads  *collector.ConfigReloads // the configuration reloads' outcome (reload.go)
	log      *logrus.Logger
	audit    *auditPipeline
	sealer   *sealer.Sealer
	schedule *sealer.Schedule
	declared *sealer.Declared
	// gpus are the opened devices; sims the simulated ones (nil on real GPUs).
	gpus *gpus
	sims []*simgpu.Device
	// policy is the VRAM-only policy (the sealer's Admission and
	// AllocationChecker).
	policy  *policy.Policy
	control *control.Server
	// controlGID is the control socket's group (nil: none, mode 0600).
	controlGID *uint32
	// handoff serves the consumer socket (nil when handoff.socket is
	// unset); handoffGID is its group.
	handoff    *handoff.Server
	handoffGID *uint32
	// observer counts the sealer's outcomes; registry is what /metrics
	// serves; metrics reads GPU telemetry in the background (metrics_wiring.go).
	observer *collector.Observer
	// controlCounters counts the control API's refusals (rate limit).
	controlCounters *collector.ControlCounters
	registry        *prometheus.Registry
	metrics         *collector.Set
	// closers release what the parts opened (NVML), after the GPUs' shards.
	closers []func() error
}

// exitError carries the exit status a start-up failure gets.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// newAgent builds every part from the configuration and opens the GPUs
// (openCUDA opens real ones); it starts nothing. On error nothing stays open.
func newAgent(ctx context.Context, cfg *config.Config, log *logrus.Logger, openCUDA cudaOpener) (a *agent, err error) {
	a = &agent{cfg: cfg, log: log, reloads: collector.NewConfigReloads(time.Now())}
	secrets, signer, err := loadSecrets(cfg)
	if err != nil {
		return nil, usageErr(err)
	}
	sec := secrets[0] // signs; the others only verify

	built := a // the return value is nil on error; close what was opened
	defer func() {
		if err != nil {
			_ = built.close()
		}
	}()
	if a.audit, err = newAuditPipeline(ctx, cfg, sec, log); err != nil {
		return nil, err
	}
	a.gpus, err = openDevices(ctx, cfg, openCUDA)
	if err != nil {
		return nil, usageErr(err)
	}
	a.sims = a.gpus.sims
	for _, d := range a.gpus.cudaDevs {
		l := log.WithFields(logrus.Fields{logfield.Component: "cuda", logfield.GPU: d.Index()})
		l.WithField(logfield.Library, d.Library()).Debug("CUDA GPU opened")
		for _, lim := range d.Limitations() {
			l.Warn(lim) // a feature this driver lacks, reported unknown or off
		}
	}
	var indexes []int
	for _, d := range a.gpus.devs {
		indexes = append(indexes, d.Index())
	}
	a.observer = newSealObserver(indexes)
	a.policy, err = policy.New(cfg.Policy, policy.Deps{GPUs: a.gpus.policy, Emitter: a.audit.Emitter, WorkerID: cfg.WorkerID, MIG: a.migSource(), Logger: log.WithField(logfield.Component, "policy")})
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s: %w", cfg.File, err))
	}
	// One pool of read buffers for the whole process, within its budget.
	bufs, err := sealer.NewBufferPool(cfg.Verify.BufferBudgetBytes)
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s: verify.buffer_budget_bytes: %w", cfg.File, err))
	}
	a.closers = append(a.closers, func() error { bufs.Close(); return nil })
	a.sealer, err = sealer.New(sealer.Config{
		Buffers: bufs, MaxVerifyInFlightPerGPU: cfg.Verify.MaxInFlightPerGPU,
		WorkerID: cfg.WorkerID, Devices: a.gpus.devs, Signer: signer, Emitter: a.audit.Emitter,
		Admission: a.policy, AllocationChecker: a.policy,
		LeafSize: cfg.Seal.LeafSize, VerifyMode: sealer.VerifyMode(cfg.Verify.Mode), Logger: log,
		Observer: a.observer, TracerProvider: a.audit.TracerProvider,
		LeaseWait: cfg.Handoff.ShutdownWait,
	})
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s: %w", cfg.File, err))
	}
	a.schedule, err = sealer.NewSchedule(a.sealer, sealer.ScheduleConfig{
		Interval: cfg.Verify.Interval, Jitter: cfg.Verify.Jitter, MaxBytesPerSecond: cfg.Verify.MaxBytesPerSecond,
		Logger: log.WithField(logfield.Component, "schedule"),
	})
	if err != nil {
		return nil, usageErr(err)
	}
	progress := func(id string) func(done, total uint64) { return sealer.LogProgress(log, id) }
	a.declared = sealer.NewDeclared(a.sealer, sealer.DeclaredConfig{
		Progress: progress, OnChange: a.schedule.Notify, Logger: log.WithField(logfield.Component, "declared"),
	})
	access, err := socketAccess(cfg, "control", cfg.Control.Group, cfg.Control.AllowedUIDs, cfg.Control.AllowedGIDs)
	if err != nil {
		return nil, usageErr(err)
	}
	a.controlGID = access.Group
	a.controlCounters = &collector.ControlCounters{}
	a.control, err = control.NewServer(control.Config{
		RateLimit: control.RateLimit{RequestsPerSecond: cfg.Control.RateLimit.RequestsPerSecond, Burst: cfg.Control.RateLimit.Burst},
		Observer:  a.controlCounters, Emitter: a.audit.Emitter, WorkerID: cfg.WorkerID,
		Sealer: a.sealer, Faults: a.faults(), ModelDirs: cfg.ModelDirs, Access: access,
		Status: a.status, NextDue: a.schedule.NextDue, Progress: progress,
		OnChange: func() { a.schedule.Notify(); a.declared.Notify() },
		Logger:   log.WithField(logfield.Component, "control"),
	})
	if err != nil {
		return nil, err
	}
	if cfg.Handoff.Socket != "" {
		hacc, err := socketAccess(cfg, "handoff", cfg.Handoff.Group, cfg.Handoff.AllowedUIDs, cfg.Handoff.AllowedGIDs)
		if err != nil {
			return nil, usageErr(err)
		}
		a.handoffGID = hacc.Group
		a.handoff, err = handoff.NewServer(handoff.Config{Sealer: a.sealer, Access: hacc, Logger: log.WithField(logfield.Component, "handoff")})
		if err != nil {
			return nil, err
		}
	}
	if a.registry, a.metrics, err = newRegistry(a); err != nil {
		return nil, err
	}
	return a, nil
}

// close releases the GPUs and what the other parts opened.
func (a *agent) close() error {
	var errs []error
	for _, c := range a.closers {
		errs = append(errs, c())
	}
	if a.gpus != nil {
		errs = append(errs, a.gpus.close())
	}
	if a.audit != nil { // a no-op after the bounded flush at shutdown
		ctx, cancel := context.WithTimeout(context.Background(), auditFlushTimeout)
		errs = append(errs, a.audit.Close(ctx))
		cancel()
	}
	return errors.Join(errs...)
}

// socketAccess turns a socket's section (control or handoff) into its access rules.
func socketAccess(cfg *config.Config, section, group string, uids, gids []uint32) (control.Access, error) {
	acc := control.Access{OwnUID: uint32(os.Getuid()), AllowedUIDs: uids, AllowedGIDs: gids, Section: section}
	if group != "" {
		gid, err := control.LookupGroup(group)
		if err != nil {
			return acc, fmt.Errorf("%s: %s.group: %w", cfg.File, section, err)
		}
		acc.Group = &gid
	}
	return acc, nil
}

// ready reports whether every declared shard is sealed and no GPU is
// blocked by the policy; why says what is missing.
func (a *agent) ready() (ok bool, pending []string, why string) {
	pending = a.declared.Pending()
	var reasons []string
	if len(pending) > 0 {
		reasons = append(reasons, "declared shards not sealed yet: "+strings.Join(pending, ", "))
	}
	if err := a.policy.Ready(); err != nil {
		reasons = append(reasons, err.Error())
	}
	return len(reasons) == 0, pending, strings.Join(reasons, "; ")
}

// usedGPUs are the GPUs the declared shards name (nil: none declared, so
// the policy checks every GPU at start-up).
func usedGPUs(cfg *config.Config) []int {
	var out []int
	for _, s := range cfg.Shards {
		out = append(out, s.GPU)
	}
	return out
}

// status describes the agent for the control API.
func (a *agent) status() client.Status {
	ok, pending, why := a.ready()
	var reasons map[string]string
	for _, id := range pending {
		if err := a.declared.LastError(id); err != nil {
			if reasons == nil {
				reasons = map[string]string{}
			}
			reasons[id] = err.Error()
		}
	}
	return client.Status{
		NotReady: why, PendingReasons: reasons,
		WorkerID: a.cfg.WorkerID, Device: a.cfg.Device, Simulated: a.sims != nil,
		Ready: ok, Pending: pending, Shards: len(a.sealer.List()), GPUs: a.sealer.GPUs(),
		VerifyMode: string(a.sealer.VerifyMode()), VerifyEvery: a.schedule.Interval(),
		OverdueShards: a.schedule.OverdueShards(),
	}
}

// loadSecrets loads the seal secret files (the first signs, every one
// verifies) and makes the seal Signer from them.
func loadSecrets(cfg *config.Config) ([]secret.Secret, *sealer.Signer, error) {
	key := "seal_secret_file"
	if len(cfg.SealSecretFiles) > 0 {
		key = "seal_secret_files"
	}
	var secs []secret.Secret
	var keys []sealer.SigningKey
	for _, f := range cfg.SecretFiles() {
		sec, err := secret.Load(f)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %s: %w", cfg.File, key, err)
		}
		k, err := sec.Key(secret.LabelSealSignature)
		if err != nil {
			return nil, nil, err
		}
		id, err := sec.KeyID()
		if err != nil {
			return nil, nil, err
		}
		secs = append(secs, sec)
		keys = append(keys, sealer.SigningKey{ID: id, Key: k})
	}
	signer, err := sealer.NewRotatingSigner(keys)
	if err != nil {
		return nil, nil, err
	}
	return secs, signer, nil
}
