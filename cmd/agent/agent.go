package main

import (
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/internal/secret"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// agent holds the running agent's parts. newAgent builds them; run.go
// starts and stops them. The metrics wiring (newRegistry) reads from here.
type agent struct {
	cfg      *config.Config
	log      *logrus.Logger
	audit    *auditPipeline
	sealer   *sealer.Sealer
	schedule *sealer.Schedule
	declared *sealer.Declared
	// sims are the simulated GPUs (nil on real GPUs).
	sims    []*simgpu.Device
	control *control.Server
	// controlGID is the control socket's group (nil: none, mode 0600).
	controlGID *uint32
	registry   *prometheus.Registry
}

// exitError carries the exit status a start-up failure gets.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// newAgent builds every part from the configuration; it starts nothing.
func newAgent(cfg *config.Config, log *logrus.Logger) (*agent, error) {
	a := &agent{cfg: cfg, log: log}
	sec, err := secret.Load(cfg.SealSecretFile)
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s: seal_secret_file: %w", cfg.File, err))
	}
	key, err := sec.Key(secret.LabelSealSignature)
	if err != nil {
		return nil, usageErr(err)
	}
	signer, err := sealer.NewSigner(key)
	if err != nil {
		return nil, usageErr(err)
	}
	devs, sims, err := openDevices(cfg)
	if err != nil {
		return nil, usageErr(err)
	}
	a.sims = sims
	if a.audit, err = newAuditPipeline(cfg, log); err != nil {
		return nil, err
	}
	a.sealer, err = sealer.New(sealer.Config{
		WorkerID: cfg.WorkerID, Devices: devs, Signer: signer, Emitter: a.audit.Emitter,
		LeafSize: cfg.Seal.LeafSize, VerifyMode: sealer.VerifyMode(cfg.Verify.Mode), Logger: log,
		Observer: newSealObserver(),
	})
	if err != nil {
		return nil, usageErr(fmt.Errorf("%s: %w", cfg.File, err))
	}
	a.schedule, err = sealer.NewSchedule(a.sealer, sealer.ScheduleConfig{
		Interval: cfg.Verify.Interval, Jitter: cfg.Verify.Jitter, MaxBytesPerSecond: cfg.Verify.MaxBytesPerSecond,
		Logger: log.WithField(logFieldComponent, "schedule"),
	})
	if err != nil {
		return nil, usageErr(err)
	}
	progress := func(id string) func(done, total uint64) { return sealer.LogProgress(log, id) }
	a.declared = sealer.NewDeclared(a.sealer, sealer.DeclaredConfig{
		Progress: progress, OnChange: a.schedule.Notify, Logger: log.WithField(logFieldComponent, "declared"),
	})
	access, err := controlAccess(cfg)
	if err != nil {
		return nil, usageErr(err)
	}
	a.controlGID = access.Group
	a.control, err = control.NewServer(control.Config{
		Sealer: a.sealer, SimGPUs: sims, ModelDirs: cfg.ModelDirs, Access: access,
		Status: a.status, NextDue: a.schedule.NextDue, Progress: progress,
		OnChange: func() { a.schedule.Notify(); a.declared.Notify() },
		Logger:   log.WithField(logFieldComponent, "control"),
	})
	if err != nil {
		return nil, err
	}
	a.registry = newRegistry(a)
	return a, nil
}

// controlAccess turns the control block into the API's access rules.
func controlAccess(cfg *config.Config) (control.Access, error) {
	acc := control.Access{OwnUID: uint32(os.Getuid()), AllowedUIDs: cfg.Control.AllowedUIDs, AllowedGIDs: cfg.Control.AllowedGIDs}
	if cfg.Control.Group != "" {
		gid, err := control.LookupGroup(cfg.Control.Group)
		if err != nil {
			return acc, fmt.Errorf("%s: control.group: %w", cfg.File, err)
		}
		acc.Group = &gid
	}
	return acc, nil
}

// ready reports whether every declared shard is sealed, and which are not.
func (a *agent) ready() (bool, []string) {
	p := a.declared.Pending()
	return len(p) == 0, p
}

// status describes the agent for the control API.
func (a *agent) status() control.Status {
	ok, pending := a.ready()
	return control.Status{
		WorkerID: a.cfg.WorkerID, Device: a.cfg.Device, Simulated: a.sims != nil,
		Ready: ok, Pending: pending, Shards: len(a.sealer.List()), GPUs: a.sealer.GPUs(),
		VerifyMode: string(a.sealer.VerifyMode()), VerifyEvery: a.schedule.Interval(),
		OverdueShards: a.schedule.OverdueShards(),
	}
}
