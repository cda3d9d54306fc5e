package simgpu

import (
	"context"
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
