package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/internal/nvml"
	"github.com/vramseal/vramseal/policy"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// errNoDriver is wrapped by openDevices' error for device: cuda or auto on
// a machine without a usable NVIDIA driver: the agent refuses to start
// rather than simulate.
var errNoDriver = cuda.ErrNoDriver

// gpus are the opened devices in the shapes the parts of the agent need.
type gpus struct {
	// devs are the sealer's devices.
	devs []sealer.Device
	// sims are the simulated GPUs (nil on real GPUs).
	sims []*simgpu.Device
	// cudaDevs are the CUDA devices (nil on simulated GPUs).
	cudaDevs []*cuda.Device
	// policy are the devices as the VRAM-only policy sees them.
	policy []policy.GPU
}

// close releases the devices (the CUDA contexts and driver threads).
func (g *gpus) close() error {
	var errs []error
	for _, d := range g.cudaDevs {
		errs = append(errs, d.Close())
	}
	return errors.Join(errs...)
}

// cudaOpener opens the CUDA devices (cuda.Open; tests pass their own).
type cudaOpener func(ctx context.Context, opts cuda.Options) ([]*cuda.Device, error)

// openDevices opens the GPUs the configuration names: simulated GPUs for
// device: sim, NVIDIA GPUs through the CUDA driver for cuda and auto. It
// never falls back to simulation: without a driver, cuda and auto fail
// with an error wrapping errNoDriver.
func openDevices(ctx context.Context, cfg *config.Config, openCUDA cudaOpener) (*gpus, error) {
	switch cfg.Device {
	case config.DeviceSim:
		sims, err := simgpu.New(simConfig(cfg.Sim))
		if err != nil {
			return nil, fmt.Errorf("device: sim: %w", err)
		}
		return &gpus{devs: simgpu.Devices(sims), sims: sims, policy: policy.GPUsOf(sims)}, nil
	case config.DeviceCUDA, config.DeviceAuto:
		opts := cuda.Options{LibraryPath: cfg.CUDA.Library, VerifyInFlight: cfg.Verify.MaxInFlightPerGPU}
		// Attached memory is read in a process of its own (this binary,
		// main: cuda.ServeReader), so a fault in it cannot end the agent's
		// CUDA context.
		if exe, err := os.Executable(); err == nil {
			opts.ReaderCommand = []string{exe}
		}
		ds, err := openCUDA(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("device: %s: %w; the agent does not fall back to a simulated GPU (set device: sim for tests and demos)", cfg.Device, err)
		}
		g := &gpus{cudaDevs: ds, policy: policy.GPUsOf(ds)}
		for _, d := range ds {
			g.devs = append(g.devs, d)
		}
		return g, nil
	}
	return nil, fmt.Errorf("device: %q is not one of sim, cuda, auto", cfg.Device)
}

// simConfig is the simulated GPUs' configuration from the sim section.
func simConfig(c config.Sim) simgpu.Config {
	out := simgpu.Config{GPUs: c.GPUs, MemoryBytes: c.MemoryBytes, PerGPU: map[int]sealer.GPUProperties{}, ManagedMemory: map[int]bool{}}
	for i := range c.GPUs {
		out.PerGPU[i], out.ManagedMemory[i] = c.GPU(i)
	}
	return out
}

// nvmlMIG tells the policy whether a GPU is in MIG mode, from NVML (the
// CUDA driver API shows MIG mode only for a MIG compute instance).
type nvmlMIG struct{ client *nvml.Client }

func (m nvmlMIG) MIGMode(ctx context.Context, uuid string) (sealer.MIGMode, error) {
	p, err := m.client.PropertiesByUUID(uuid)
	switch {
	case err != nil || !p.MIGSupported:
		return sealer.MIGUnknown, err
	case p.MIGEnabled:
		return sealer.MIGEnabled, nil
	}
	return sealer.MIGDisabled, nil
}

// migSource opens NVML for the policy on real GPUs. Without NVML (no
// library, or a build without cgo) MIG mode stays unknown, which the policy
// does not count as a violation; the reason is logged.
func (a *agent) migSource() policy.MIGSource {
	if a.sims != nil {
		return nil // the simulated GPUs report their own MIG mode
	}
	client, err := nvml.Open(nvml.System())
	if err != nil {
		a.log.WithError(err).Info("NVML is not available: the policy cannot tell whether a GPU is in MIG mode")
		return nil
	}
	a.closers = append(a.closers, client.Close)
	return nvmlMIG{client: client}
}
