package simgpu

import (
	"context"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/sealer"
)

// Seals is what a shard's memfd is sealed with before it is handed to a
// consumer: its size is fixed (no shrink, no grow), no new writable mapping
// or write is allowed (the agent's own mapping, made before, still serves
// `debug corrupt`), and the seals themselves are fixed.
const Seals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SEAL

// memfd is a simulated allocation's memory: an anonymous file, mapped
// shared into the agent. Consumers map the same pages.
type memfd struct {
	f    *os.File
	data []byte
}

func newMemfd(name string, size uint64) (*memfd, error) {
	if size > uint64(int(^uint(0)>>1)) {
		return nil, fmt.Errorf("allocation of %d bytes is too large to map", size)
	}
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd_create: %w", err)
	}
	f := os.NewFile(uintptr(fd), name)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return nil, fmt.Errorf("sizing a memfd to %d bytes: %w", size, err)
	}
	data, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mapping a %d-byte memfd: %w", size, err)
	}
	return &memfd{f: f, data: data}, nil
}

func (m *memfd) close() {
	_ = unix.Munmap(m.data)
	_ = m.f.Close()
}

// Export implements sealer.Exporter: a new descriptor of the allocation's
// memfd, sealed first (Seals) so that its holder can map it only
// read-only and can neither write nor resize it. The shard must be
// written: after the first export the agent writes only through its own
// mapping.
func (d *Device) Export(ctx context.Context, a sealer.Allocation) (sealer.Exported, error) {
	al, err := d.check(a, 0, 0)
	if err != nil {
		return sealer.Exported{}, err
	}
	if al.adopted {
		return sealer.Exported{}, errAdopted
	}
	if err := al.use(); err != nil {
		return sealer.Exported{}, err
	}
	defer al.rw.RUnlock()
	fd := int(al.mem.f.Fd())
	have, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return sealer.Exported{}, fmt.Errorf("simulated GPU %d: reading a memfd's seals: %w", d.index, err)
	}
	if have&Seals != Seals {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, Seals); err != nil {
			return sealer.Exported{}, fmt.Errorf("simulated GPU %d: sealing a memfd: %w", d.index, err)
		}
	}
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return sealer.Exported{}, fmt.Errorf("simulated GPU %d: %w", d.index, err)
	}
	return sealer.Exported{File: os.NewFile(uintptr(nfd), al.mem.f.Name()), Kind: sealer.MemoryMemfd}, nil
}

// NeedSeals are the seals an engine's memfd must carry to be attached: its
// size cannot change under the agent's mapping (a shrink would be a SIGBUS
// in the agent).
const NeedSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW

// Adopt implements sealer.Adopter: it takes a memfd an engine owns, sealed
// against shrinking and growing (NeedSeals), and maps its first size bytes
// read-only. The bytes count against the GPU's capacity while attached.
// Such an allocation cannot be written, flipped or exported: it is the
// owner's.
func (d *Device) Adopt(ctx context.Context, memory *os.File, size uint64) (sealer.Allocation, error) {
	if size == 0 || size > uint64(int(^uint(0)>>1)) {
		return nil, fmt.Errorf("cannot attach %d bytes", size)
	}
	fd := int(memory.Fd())
	seals, err := unix.FcntlInt(uintptr(fd), unix.F_GET_SEALS, 0)
	if err != nil {
		return nil, fmt.Errorf("the descriptor is not a memfd that supports seals (F_GET_SEALS: %v)", err)
	}
	if seals&NeedSeals != NeedSeals {
		return nil, errors.New("the memfd is not sealed against shrinking and growing (F_SEAL_SHRINK|F_SEAL_GROW): its size could change under the agent")
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, fmt.Errorf("fstat: %w", err)
	}
	if uint64(st.Size) < size {
		return nil, fmt.Errorf("the memfd holds %d bytes, fewer than the %d claimed", st.Size, size)
	}
	d.mu.Lock()
	switch {
	case d.lost:
		d.mu.Unlock()
		return nil, d.lostErr()
	case size > d.total-d.used:
		free := d.total - d.used
		d.mu.Unlock()
		return nil, fmt.Errorf("simulated GPU %d: %d bytes to attach, %d free: %w", d.index, size, free, sealer.ErrOutOfMemory)
	}
	d.used += size
	d.mu.Unlock()
	undo := func() { d.mu.Lock(); d.used -= size; d.mu.Unlock() }
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		undo()
		return nil, fmt.Errorf("simulated GPU %d: %w", d.index, err)
	}
	f := os.NewFile(uintptr(nfd), "attached")
	data, err := unix.Mmap(nfd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		f.Close()
		undo()
		return nil, fmt.Errorf("mapping the attached memfd: %w", err)
	}
	a := &allocation{dev: d, mem: &memfd{f: f, data: data}, data: data, adopted: true}
	d.mu.Lock()
	d.live[a] = true
	d.mu.Unlock()
	return a, nil
}
