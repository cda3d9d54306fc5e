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
	devs     []*simgpu.Device
	agentPID uint32
}

var _ collector.GPUSource = (*Source)(nil)

// Option configures a Source.
type Option func(*Source)

// WithAgentPID reports the agent (its pid) as the one process on each
// simulated GPU that holds memory, holding all of it: in the simulation the
// agent holds every shard's memory itself.
func WithAgentPID(pid int) Option {
	return func(s *Source) { s.agentPID = uint32(pid) }
}

// New returns a source reading the simulated devices.
func New(devs []*simgpu.Device, opts ...Option) *Source {
	s := &Source{devs: devs}
	for _, o := range opts {
		o(s)
	}
	return s
}

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
		if s.agentPID != 0 {
			out[i].HasProcesses = true
			if t.UsedBytes > 0 {
				out[i].Processes = []collector.GPUProcess{{PID: s.agentPID, UsedBytes: t.UsedBytes, HasUsed: true, GPUInstanceID: -1}}
			}
		}
	}
	return out, nil
}
