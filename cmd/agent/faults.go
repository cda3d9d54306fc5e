package main

import (
	"context"
	"fmt"
	"time"

	"github.com/vramseal/vramseal/audit"
	"github.com/vramseal/vramseal/internal/control"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// auditedFaults are the simulated GPU's fault switches as the control API's
// debug endpoints drive them: each fault injected is a
// vramseal.debug.fault_injected event naming its caller.
type auditedFaults struct {
	faults   simgpu.Faults
	emitter  audit.Emitter
	workerID string
}

var _ control.Faults = auditedFaults{}

// faults are the simulated GPUs' fault switches for the control API's
// debug endpoints; nil on real GPUs, where they are refused.
func (a *agent) faults() control.Faults {
	if a.sims == nil {
		return nil
	}
	return auditedFaults{faults: simgpu.Faults{Shards: a.sealer, Devices: a.sims}, emitter: a.audit.Emitter, workerID: a.cfg.WorkerID}
}

// injected emits the event of a fault that took effect.
func (f auditedFaults) injected(ctx context.Context, fault, shard string, gpu int, details string) {
	h := audit.NewHeader(time.Now().UTC(), f.workerID)
	c := audit.CauseOr(ctx, audit.CauseDebug)
	h.Cause = audit.Cause{Kind: audit.CauseDebug, Caller: c.Caller}
	for _, d := range f.faults.Devices {
		if d.Index() == gpu {
			h.GPUUUID = d.UUID()
		}
	}
	f.emitter.Emit(ctx, audit.DebugFaultInjected{Header: h, Fault: fault, ShardID: shard, GPUDevice: gpu, Details: details})
}

func (f auditedFaults) Corrupt(ctx context.Context, id string, offset uint64, bit uint) error {
	gpu, err := simgpu.CorruptShard(ctx, f.faults.Shards, id, offset, bit)
	if err == nil {
		f.injected(ctx, audit.FaultCorrupt, id, gpu, fmt.Sprintf("bit %d of the byte at offset %d flipped", bit, offset))
	}
	return err
}

func (f auditedFaults) AddECC(ctx context.Context, gpu int, corrected, uncorrected uint64) (uint64, uint64, error) {
	c, u, err := f.faults.AddECC(ctx, gpu, corrected, uncorrected)
	if err == nil {
		f.injected(ctx, audit.FaultECC, "", gpu, fmt.Sprintf("%d correctable and %d uncorrectable ECC errors added", corrected, uncorrected))
	}
	return c, u, err
}

func (f auditedFaults) SetLost(ctx context.Context, gpu int, lost bool) error {
	err := f.faults.SetLost(ctx, gpu, lost)
	if err == nil {
		fault, what := audit.FaultGPULost, "the GPU no longer answers"
		if !lost {
			fault, what = audit.FaultGPURestored, "the GPU is back, with its memory empty"
		}
		f.injected(ctx, fault, "", gpu, what)
	}
	return err
}

func (f auditedFaults) SetFailReads(ctx context.Context, gpu int, on bool) error {
	err := f.faults.SetFailReads(ctx, gpu, on)
	if err == nil {
		f.injected(ctx, audit.FaultFailReads, "", gpu, fmt.Sprintf("reads fail: %v", on))
	}
	return err
}
