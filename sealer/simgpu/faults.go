package simgpu

import (
	"context"
	"errors"
	"fmt"

	"github.com/vramseal/vramseal/sealer"
)

// ShardMemory reaches a sealed shard's memory; *sealer.Sealer implements it.
type ShardMemory interface {
	Memory(ctx context.Context, op, id string, fn func(dev sealer.Device, a sealer.Allocation, size uint64) error) error
}

var _ ShardMemory = (*sealer.Sealer)(nil)

// ErrNotSimulated is returned by Corrupt for a shard on a real GPU.
var ErrNotSimulated = errors.New("only the simulated GPU can corrupt VRAM")

// Corrupt flips bit (0–7) of the byte at offset of a sealed shard's
// simulated VRAM: the tamper switch behind `vramseal-agent debug corrupt`.
// An unknown shard is a sealer KindNotFound error; a shard on a real GPU,
// an offset past its end or a bad bit is KindInvalid.
func Corrupt(ctx context.Context, s ShardMemory, id string, offset uint64, bit uint) error {
	_, err := CorruptShard(ctx, s, id, offset, bit)
	return err
}

// CorruptShard is Corrupt that also returns the index of the GPU the shard
// is on, for an event that names it.
func CorruptShard(ctx context.Context, s ShardMemory, id string, offset uint64, bit uint) (gpu int, err error) {
	gpu = -1
	err = s.Memory(ctx, "corrupt", id, func(dev sealer.Device, a sealer.Allocation, size uint64) error {
		d, ok := dev.(*Device)
		if !ok {
			return ErrNotSimulated
		}
		if offset >= size || bit > 7 {
			return fmt.Errorf("offset %d bit %d is outside the shard (%d bytes)", offset, bit, size)
		}
		gpu = d.Index()
		return d.FlipBit(ctx, a, offset, bit)
	})
	return gpu, err
}

// Faults are the simulated GPUs' fault switches over a sealer's shards:
// what the agent's debug endpoints drive (device: sim only).
type Faults struct {
	Shards  ShardMemory
	Devices []*Device
}

// Corrupt flips one bit of a sealed shard (see Corrupt).
func (f Faults) Corrupt(ctx context.Context, id string, offset uint64, bit uint) error {
	return Corrupt(ctx, f.Shards, id, offset, bit)
}

// AddECC adds ECC errors to a GPU and returns its new totals.
func (f Faults) AddECC(ctx context.Context, gpu int, corrected, uncorrected uint64) (totalCorrected, totalUncorrected uint64, err error) {
	d, err := f.device(gpu)
	if err != nil {
		return 0, 0, err
	}
	d.AddECC(corrected, uncorrected)
	t := d.Telemetry()
	return t.ECCCorrected, t.ECCUncorrected, nil
}

// SetLost makes a GPU disappear or come back (see Device.SetLost).
func (f Faults) SetLost(ctx context.Context, gpu int, lost bool) error {
	d, err := f.device(gpu)
	if err == nil {
		d.SetLost(lost)
	}
	return err
}

// SetFailReads makes a GPU's reads fail, or not.
func (f Faults) SetFailReads(ctx context.Context, gpu int, on bool) error {
	d, err := f.device(gpu)
	if err == nil {
		d.SetFailReads(on)
	}
	return err
}

func (f Faults) device(gpu int) (*Device, error) {
	for _, d := range f.Devices {
		if d.Index() == gpu {
			return d, nil
		}
	}
	return nil, fmt.Errorf("simulated GPU %d: %w", gpu, sealer.ErrNoDevice)
}
