// Package simgpu is the simulated GPU: the sealer's Device, GPU telemetry
// and device properties held in host memory, with fault switches.
//
// It exists for tests and the demo and is always labelled as simulated: its
// devices are named "vramseal simulated GPU" and their UUIDs start with
// "GPU-SIM-". Capacity is accounting: memory is allocated per allocation,
// never preallocated, so a simulated 80 GiB GPU costs nothing until shards
// are sealed into it. Allocations are independent byte slices; no two share
// memory.
//
// Fault switches: flip a bit of an allocation (tampering), fail the next
// allocation, fail every read, add ECC error counts, and lose the device
// (every call fails with sealer.ErrDeviceLost until it is restored, and a
// restored device has lost its allocations, as after a GPU reset).
package simgpu

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/vramseal/vramseal/sealer"
)

// Name is every simulated device's product name.
const Name = "vramseal simulated GPU"

// DriverVersion is what simulated devices report as their driver.
const DriverVersion = "simulated"

// DefaultProperties are those of a data-centre GPU (compute 9.0, ECC on,
// MIG off). Index, Name, UUID and TotalMemory are the simulator's own.
func DefaultProperties() sealer.GPUProperties {
	return sealer.GPUProperties{Compute: sealer.ComputeCapability{Major: 9}, ECCEnabled: true, MIG: sealer.MIGDisabled}
}

// Config describes the simulated GPUs.
type Config struct {
	GPUs        int
	MemoryBytes uint64
	// Properties apply to every GPU unless PerGPU overrides one. Index,
	// Name, UUID and TotalMemory are set by the simulator.
	Properties sealer.GPUProperties
	PerGPU     map[int]sealer.GPUProperties
	// ManagedMemory lists GPUs whose allocations report as managed
	// (unified) memory, so the policy's check after a seal fails.
	ManagedMemory map[int]bool
}

// New returns cfg.GPUs simulated devices.
func New(cfg Config) ([]*Device, error) {
	if cfg.GPUs < 1 || cfg.GPUs > 64 {
		return nil, fmt.Errorf("simgpu: %d GPUs: want 1 to 64", cfg.GPUs)
	}
	if cfg.MemoryBytes < 1<<20 {
		return nil, fmt.Errorf("simgpu: memory %d bytes: want at least 1 MiB", cfg.MemoryBytes)
	}
	out := make([]*Device, cfg.GPUs)
	for i := range out {
		p := cfg.Properties
		if pp, ok := cfg.PerGPU[i]; ok {
			p = pp
		}
		out[i] = &Device{
			index:   i,
			total:   cfg.MemoryBytes,
			props:   p,
			managed: cfg.ManagedMemory[i],
			uuid:    fmt.Sprintf("GPU-SIM-%08x-0000-4000-8000-%012x", i, i),
			live:    map[*allocation]bool{},
		}
	}
	return out, nil
}

// Devices returns ds as sealer Devices.
func Devices(ds []*Device) []sealer.Device {
	out := make([]sealer.Device, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}

// Device is one simulated GPU.
type Device struct {
	index int
	uuid  string
	total uint64

	mu            sync.Mutex
	props         sealer.GPUProperties
	managed       bool
	used          uint64
	live          map[*allocation]bool
	failNextAlloc error
	failReads     bool
	lost          bool
	eccCorrected  uint64
	eccUncorrect  uint64
}

// allocation is one simulated device allocation: a memfd mapped shared
// into the agent (memfd.go). It prints no address.
type allocation struct {
	dev  *Device
	mem  *memfd
	data []byte // mem's mapping
	// rw orders reads of data (Read, LeafDigests) against writes (Write,
	// FlipBit), so a debug bit flip never races a verification, and all
	// of them against unmapping (gone).
	rw   sync.RWMutex
	gone bool // unmapped: freed, or lost with its device
	// adopted marks an engine's memory (Adopt), mapped read-only: never
	// written, flipped or exported.
	adopted bool
}

// errAdopted refuses to write or export an engine's attached memory.
var errAdopted = errors.New("attached memory belongs to its owner: the agent only reads it")

func (a *allocation) Size() uint64     { return uint64(len(a.data)) }
func (a *allocation) String() string   { return fmt.Sprintf("simgpu allocation (%d bytes)", len(a.data)) }
func (a *allocation) GoString() string { return a.String() }

var (
	_ sealer.Device       = (*Device)(nil)
	_ sealer.LeafDigester = (*Device)(nil)
	_ sealer.GPUDescriber = (*Device)(nil)
	_ sealer.Exporter     = (*Device)(nil)
	_ sealer.Adopter      = (*Device)(nil)
)

// Index is the device index.
func (d *Device) Index() int { return d.index }

// UUID is the device's simulated UUID.
func (d *Device) UUID() string { return d.uuid }

// MemoryInfo reports total and free memory.
func (d *Device) MemoryInfo(ctx context.Context) (sealer.MemoryInfo, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost {
		return sealer.MemoryInfo{}, d.lostErr()
	}
	return sealer.MemoryInfo{Total: d.total, Free: d.total - d.used}, nil
}

func (d *Device) lostErr() error {
	return fmt.Errorf("simulated GPU %d: %w", d.index, sealer.ErrDeviceLost)
}

// Alloc takes size bytes of the device's capacity and allocates them.
func (d *Device) Alloc(ctx context.Context, size uint64) (sealer.Allocation, error) {
	if size == 0 {
		return nil, errors.New("simgpu: zero-byte allocation")
	}
	d.mu.Lock()
	if d.lost {
		d.mu.Unlock()
		return nil, d.lostErr()
	}
	if err := d.failNextAlloc; err != nil {
		d.failNextAlloc = nil
		d.mu.Unlock()
		return nil, err
	}
	if size > d.total-d.used {
		free := d.total - d.used
		d.mu.Unlock()
		return nil, fmt.Errorf("simulated GPU %d: %d bytes requested, %d free: %w", d.index, size, free, sealer.ErrOutOfMemory)
	}
	d.used += size
	d.mu.Unlock()
	// Created outside the lock; its pages are faulted in as written.
	m, err := newMemfd(fmt.Sprintf("vramseal-sim-gpu%d", d.index), size)
	if err != nil {
		d.mu.Lock()
		d.used -= size
		d.mu.Unlock()
		return nil, fmt.Errorf("simulated GPU %d: %w", d.index, err)
	}
	a := &allocation{dev: d, mem: m, data: m.data}
	d.mu.Lock()
	d.live[a] = true
	d.mu.Unlock()
	return a, nil
}

// writable checks a range of an allocation the agent may write (not an
// engine's attached memory) and write-locks it; the caller Unlocks.
func (d *Device) writable(a sealer.Allocation, off, n uint64) (*allocation, error) {
	al, err := d.check(a, off, n)
	if err != nil {
		return nil, err
	}
	if al.adopted {
		return nil, errAdopted
	}
	al.rw.Lock()
	if al.gone {
		al.rw.Unlock()
		return nil, fmt.Errorf("simulated GPU %d: %w", d.index, sealer.ErrAllocationMissing)
	}
	return al, nil
}

// use read-locks a checked allocation for reading its mapping; the error
// says it was unmapped in between. The caller RUnlocks.
func (al *allocation) use() error {
	al.rw.RLock()
	if al.gone {
		al.rw.RUnlock()
		return fmt.Errorf("simulated GPU %d: %w", al.dev.index, sealer.ErrAllocationMissing)
	}
	return nil
}

// unmap drops the agent's mapping and its memfd; a consumer's mapping of
// the same memory stays valid until the consumer unmaps it.
func (al *allocation) unmap() {
	al.rw.Lock()
	defer al.rw.Unlock()
	if !al.gone {
		al.gone = true
		al.mem.close()
		al.data = nil
	}
}

// check finds a live allocation of this device.
func (d *Device) check(a sealer.Allocation, off, n uint64) (*allocation, error) {
	al, ok := a.(*allocation)
	if !ok || al.dev != d {
		return nil, fmt.Errorf("simulated GPU %d: allocation of another device: %w", d.index, sealer.ErrAllocationMissing)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost {
		return nil, d.lostErr()
	}
	if !d.live[al] {
		return nil, fmt.Errorf("simulated GPU %d: %w", d.index, sealer.ErrAllocationMissing)
	}
	if off > uint64(len(al.data)) || n > uint64(len(al.data))-off {
		return nil, fmt.Errorf("simulated GPU %d: range [%d, %d) outside a %d-byte allocation", d.index, off, off+n, len(al.data))
	}
	return al, nil
}

// Write copies p into the allocation at off.
func (d *Device) Write(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	al, err := d.writable(a, off, uint64(len(p)))
	if err != nil {
		return err
	}
	defer al.rw.Unlock()
	copy(al.data[off:], p)
	return nil
}

// Read copies the allocation at off into p.
func (d *Device) Read(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	al, err := d.check(a, off, uint64(len(p)))
	if err != nil {
		return err
	}
	if err := d.readFault(); err != nil {
		return err
	}
	if err := al.use(); err != nil {
		return err
	}
	copy(p, al.data[off:])
	al.rw.RUnlock()
	return nil
}

func (d *Device) readFault() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.failReads {
		return fmt.Errorf("simulated GPU %d: read failed (fault injected)", d.index)
	}
	return nil
}

// LeafDigests hashes the allocation's leaves where they lie, on all cores,
// like the GPU kernel does in VRAM: only the digests leave the device.
func (d *Device) LeafDigests(ctx context.Context, a sealer.Allocation, n, leafSize uint64) ([]sealer.LeafHash, error) {
	al, err := d.check(a, 0, n)
	if err != nil {
		return nil, err
	}
	if err := d.readFault(); err != nil {
		return nil, err
	}
	if err := sealer.CheckLeafSize(leafSize); err != nil {
		return nil, err
	}
	if err := al.use(); err != nil {
		return nil, err
	}
	defer al.rw.RUnlock()
	count := sealer.LeafCount(n, leafSize)
	leaves := make([]sealer.LeafHash, count)
	workers := runtime.GOMAXPROCS(0)
	var wg sync.WaitGroup
	per := (count + uint64(workers) - 1) / uint64(workers)
	for w := uint64(0); w < uint64(workers); w++ {
		lo, hi := w*per, min((w+1)*per, count)
		if lo >= hi {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				if i%64 == 0 && ctx.Err() != nil {
					return
				}
				b := i * leafSize
				leaves[i] = sha256.Sum256(al.data[b:min(b+leafSize, n)])
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return leaves, nil
}

// Free releases an allocation and gives its capacity back.
func (d *Device) Free(ctx context.Context, a sealer.Allocation) error {
	al, ok := a.(*allocation)
	if !ok || al.dev != d {
		return fmt.Errorf("simulated GPU %d: allocation of another device: %w", d.index, sealer.ErrAllocationMissing)
	}
	d.mu.Lock()
	if d.lost {
		d.mu.Unlock()
		return d.lostErr()
	}
	if !d.live[al] {
		d.mu.Unlock()
		return fmt.Errorf("simulated GPU %d: freed twice or lost: %w", d.index, sealer.ErrAllocationMissing)
	}
	delete(d.live, al)
	d.used -= al.Size()
	d.mu.Unlock()
	al.unmap()
	return nil
}

// FlipBit flips bit (0–7) of the byte at offset in the allocation.
func (d *Device) FlipBit(ctx context.Context, a sealer.Allocation, offset uint64, bit uint) error {
	if bit > 7 {
		return fmt.Errorf("simgpu: bit %d: want 0 to 7", bit)
	}
	al, err := d.writable(a, offset, 1)
	if err != nil {
		return err
	}
	defer al.rw.Unlock()
	al.data[offset] ^= 1 << bit
	return nil
}

// FailNextAlloc makes the next Alloc fail with err (wrap
// sealer.ErrOutOfMemory to simulate a full device).
func (d *Device) FailNextAlloc(err error) {
	d.mu.Lock()
	d.failNextAlloc = err
	d.mu.Unlock()
}

// SetFailReads makes every read (and device-side digest) fail, or not.
func (d *Device) SetFailReads(on bool) {
	d.mu.Lock()
	d.failReads = on
	d.mu.Unlock()
}

// SetLost makes the device disappear (every call fails with
// sealer.ErrDeviceLost) or come back. A device that comes back has lost
// every allocation and its memory is free again, as after a reset.
func (d *Device) SetLost(lost bool) {
	d.mu.Lock()
	var gone map[*allocation]bool
	if d.lost && !lost {
		gone, d.live = d.live, map[*allocation]bool{}
		d.used = 0
	}
	d.lost = lost
	d.mu.Unlock()
	for al := range gone {
		al.unmap()
	}
}

// AddECC adds to the device's ECC error counters.
func (d *Device) AddECC(corrected, uncorrected uint64) {
	d.mu.Lock()
	d.eccCorrected += corrected
	d.eccUncorrect += uncorrected
	d.mu.Unlock()
}

// SetProperties replaces the device's properties (Index, Name, UUID and
// TotalMemory stay the simulator's own).
func (d *Device) SetProperties(p sealer.GPUProperties) {
	d.mu.Lock()
	d.props = p
	d.mu.Unlock()
}

// SetManagedMemory makes allocations report as managed (unified) memory,
// or as plain device memory again.
func (d *Device) SetManagedMemory(on bool) {
	d.mu.Lock()
	d.managed = on
	d.mu.Unlock()
}

// Properties implements sealer.GPUDescriber. A lost device does not answer.
func (d *Device) Properties(ctx context.Context) (sealer.GPUProperties, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost {
		return sealer.GPUProperties{}, d.lostErr()
	}
	p := d.props
	p.Index, p.Name, p.UUID, p.TotalMemory = d.index, Name, d.uuid, d.total
	return p, nil
}

// AllocationMemory implements sealer.GPUDescriber: device memory, or
// managed memory while SetManagedMemory is on.
func (d *Device) AllocationMemory(ctx context.Context, a sealer.Allocation) (sealer.AllocationMemory, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.lost {
		return sealer.AllocationMemory{}, d.lostErr()
	}
	if d.managed {
		return sealer.AllocationMemory{Type: "unified", Managed: true}, nil
	}
	return sealer.AllocationMemory{Type: sealer.MemoryDevice}, nil
}

// Telemetry is what a simulated device reports to the metrics collector, in
// the shape NVML gives for a real one.
type Telemetry struct {
	Index          int
	UUID           string
	Name           string
	DriverVersion  string
	TotalBytes     uint64
	UsedBytes      uint64
	FreeBytes      uint64
	ECCCorrected   uint64
	ECCUncorrected uint64
	Lost           bool
}

// Telemetry returns the device's current telemetry.
func (d *Device) Telemetry() Telemetry {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Telemetry{
		Index: d.index, UUID: d.uuid, Name: Name, DriverVersion: DriverVersion,
		TotalBytes: d.total, UsedBytes: d.used, FreeBytes: d.total - d.used,
		ECCCorrected: d.eccCorrected, ECCUncorrected: d.eccUncorrect, Lost: d.lost,
	}
}

// LiveAllocations returns the number of live allocations (for tests).
func (d *Device) LiveAllocations() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.live)
}
