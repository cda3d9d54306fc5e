package policy

import (
	"context"
	"fmt"

	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// SimGPUs adapts simulated GPUs: their configured properties, their memory
// and their ManagedMemory switch (allocations then report as managed).
func SimGPUs(ds []*simgpu.Device) []GPU {
	return adapt(ds, func(d *simgpu.Device) GPU { return simGPU{d} })
}

type simGPU struct{ d *simgpu.Device }

func (g simGPU) Index() int { return g.d.Index() }

func (g simGPU) Properties(ctx context.Context) (Properties, error) {
	info, err := g.d.MemoryInfo(ctx)
	if err != nil {
		return Properties{}, err
	}
	sp := g.d.Properties()
	mig := MIGDisabled
	if sp.MIGEnabled {
		mig = MIGEnabled
	}
	return Properties{
		Name: simgpu.Name, UUID: g.d.UUID(), Integrated: sp.Integrated,
		ComputeMajor: sp.ComputeMajor, ComputeMinor: sp.ComputeMinor,
		TotalMemory: info.Total, ECCEnabled: sp.ECCEnabled, MIG: mig,
	}, nil
}

func (g simGPU) AllocationMemory(ctx context.Context, a sealer.Allocation) (AllocationMemory, error) {
	if g.d.Properties().ManagedMemory {
		return AllocationMemory{Type: "unified", Managed: true}, nil
	}
	return AllocationMemory{Type: "device"}, nil
}

// CUDAGPUs adapts CUDA devices: properties read by the driver at Open, a
// check that the device still answers, and cuPointerGetAttribute for
// allocations. MIG is enabled for a MIG compute instance and unknown
// otherwise (give the Policy a MIGSource, NVML, to know it).
func CUDAGPUs(ds []*cuda.Device) []GPU {
	return adapt(ds, func(d *cuda.Device) GPU { return cudaGPU{d} })
}

// adapt wraps each device as a GPU, in order.
func adapt[D any](ds []D, wrap func(D) GPU) []GPU {
	out := make([]GPU, len(ds))
	for i, d := range ds {
		out[i] = wrap(d)
	}
	return out
}

type cudaGPU struct{ d *cuda.Device }

func (g cudaGPU) Index() int { return g.d.Index() }

func (g cudaGPU) Properties(ctx context.Context) (Properties, error) {
	if _, err := g.d.MemoryInfo(ctx); err != nil {
		return Properties{}, err
	}
	cp := g.d.Properties()
	mig := MIGUnknown
	if cp.MIGInstance {
		mig = MIGEnabled
	}
	return Properties{
		Name: cp.Name, UUID: cp.UUID, Integrated: cp.Integrated,
		ComputeMajor: cp.ComputeMajor, ComputeMinor: cp.ComputeMinor,
		TotalMemory: cp.TotalMemory, ECCEnabled: cp.ECCEnabled, MIG: mig,
	}, nil
}

func (g cudaGPU) AllocationMemory(ctx context.Context, a sealer.Allocation) (AllocationMemory, error) {
	m, err := g.d.AllocationMemory(ctx, a)
	if err != nil {
		return AllocationMemory{}, err
	}
	t := m.Type.String()
	switch m.Type {
	case cuda.MemoryDevice, cuda.MemoryHost, cuda.MemoryUnified, cuda.MemoryArray:
	default:
		t = fmt.Sprintf("unknown (%d)", int(m.Type))
	}
	return AllocationMemory{Type: t, Managed: m.Managed}, nil
}
