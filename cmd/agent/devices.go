package main

import (
	"errors"
	"fmt"

	"github.com/vramseal/vramseal/internal/config"
	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// errNoDriver is returned for device: cuda or auto while the agent has no
// CUDA backend: the agent refuses to start rather than simulate.
var errNoDriver = errors.New("no CUDA driver/backend")

// openDevices opens the GPUs the configuration names. sims holds the
// simulated devices (device: sim) and is nil on real GPUs. It never falls
// back to simulation.
func openDevices(cfg *config.Config) (devs []sealer.Device, sims []*simgpu.Device, err error) {
	switch cfg.Device {
	case config.DeviceSim:
		sims, err := simgpu.New(cfg.SimConfig())
		if err != nil {
			return nil, nil, fmt.Errorf("device: sim: %w", err)
		}
		return simgpu.Devices(sims), sims, nil
	case config.DeviceCUDA, config.DeviceAuto:
		return nil, nil, fmt.Errorf("device: %s: %w in this build of vramseal-agent; the agent does not fall back to a simulated GPU (set device: sim for tests and demos)", cfg.Device, errNoDriver)
	}
	return nil, nil, fmt.Errorf("device: %q is not one of sim, cuda, auto", cfg.Device)
}
