// Package simsource is the collector's GPU source for simulated GPUs: their
// memory reflects the shards sealed in them and their ECC counts the faults
// injected. The agent wires it for device: sim only; the collector itself
// knows no backend.
package simsource

import (
	"context"

	"github.com/vramseal/vramseal/collector"
	"github.com/vramseal/vramseal/sealer/simgpu"
)

// Source reads simulated GPUs' telemetry.
type Source struct {
	devs []*simgpu.Device
}

var _ collector.GPUSource = (*Source)(nil)

// New returns a source reading the simulated devices.
func New(devs []*simgpu.Device) *Source { return &Source{devs: devs} }

// Telemetry implements collector.GPUSource.
func (s *Source) Telemetry(ctx context.Context) ([]collector.GPUTelemetry, error) {
	out := make([]collector.GPUTelemetry, len(s.devs))
	for i, d := range s.devs {
		t := d.Telemetry()
		out[i] = collector.GPUTelemetry{
			Index: t.Index, UUID: t.UUID, Name: t.Name, DriverVersion: t.DriverVersion, Up: !t.Lost,
			TotalBytes: t.TotalBytes, UsedBytes: t.UsedBytes, FreeBytes: t.FreeBytes,
			HasECC: true, ECCCorrected: t.ECCCorrected, ECCUncorrected: t.ECCUncorrected,
		}
	}
	return out, nil
}
