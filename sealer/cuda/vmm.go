package cuda

import (
	"context"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/vramseal/vramseal/sealer"
)

// Virtual memory management constants (cuda.h).
const (
	memAllocationTypePinned = 1 // CU_MEM_ALLOCATION_TYPE_PINNED
	memHandlePosixFD        = 1 // CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR
	memLocationDevice       = 1 // CU_MEM_LOCATION_TYPE_DEVICE
	granularityMinimum      = 0 // CU_MEM_ALLOC_GRANULARITY_MINIMUM

	// AccessRead is CU_MEM_ACCESS_FLAGS_PROT_READ, AccessReadWrite
	// CU_MEM_ACCESS_FLAGS_PROT_READWRITE.
	AccessRead      = 1
	AccessReadWrite = 3

	// cuDeviceGetAttribute: VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED and
	// HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED.
	attrVMMSupported     = 102
	attrPosixFDSupported = 103
)

// allocProp is CUmemAllocationProp (32 bytes).
type allocProp struct {
	Type         int32
	HandleTypes  int32
	LocationType int32
	LocationID   int32
	Win32        uintptr
	Flags        [8]byte
}

// accessDesc is CUmemAccessDesc (12 bytes).
type accessDesc struct {
	LocationType int32
	LocationID   int32
	Flags        int32
}

// vmmProp is the allocation property of a shard on device dev: pinned
// device memory exportable as a POSIX file descriptor.
func vmmProp(dev int32) *allocProp {
	return &allocProp{Type: memAllocationTypePinned, HandleTypes: memHandlePosixFD, LocationType: memLocationDevice, LocationID: dev}
}

// vmmSupport tells whether the device can hold shards as exportable VMM
// allocations, and its allocation granularity; else why not (a
// limitation).
func vmmSupport(drv *driver, dev int32) (uint64, string) {
	if !drv.hasVMM() {
		return 0, "shards cannot be handed to consumers: the driver lacks the virtual memory management calls (cuMemCreate…)"
	}
	var vmm, fd int32
	if err := errors.Join(call("cuDeviceGetAttribute(VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED)", drv.cuDeviceGetAttribute(&vmm, attrVMMSupported, dev)),
		call("cuDeviceGetAttribute(HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED)", drv.cuDeviceGetAttribute(&fd, attrPosixFDSupported, dev))); err != nil {
		return 0, fmt.Sprintf("shards cannot be handed to consumers: %v", err)
	}
	if vmm == 0 || fd == 0 {
		return 0, "shards cannot be handed to consumers: the GPU does not support virtual memory management with POSIX file descriptors"
	}
	var g uint64
	if err := call("cuMemGetAllocationGranularity", drv.cuMemGetAllocationGranularity(&g, vmmProp(dev), granularityMinimum)); err != nil {
		return 0, fmt.Sprintf("shards cannot be handed to consumers: %v", err)
	}
	if g == 0 || g&(g-1) != 0 {
		return 0, fmt.Sprintf("shards cannot be handed to consumers: the driver reports an allocation granularity of %d bytes", g)
	}
	return g, ""
}

// roundUp rounds n up to a multiple of the power of two g.
func roundUp(n, g uint64) uint64 { return (n + g - 1) &^ (g - 1) }

// vmmMemory is the driver's side of a VMM allocation: its handle and the
// address range it is mapped at, mapped bytes long.
type vmmMemory struct {
	handle uint64
	mapped uint64
	// access is the access flag that took effect (AccessRead or
	// AccessReadWrite).
	access int32
}

// vmmCreate allocates size bytes (rounded up to the granularity) as a VMM
// allocation on the worker's device and maps it read-write: cuMemCreate,
// cuMemAddressReserve, cuMemMap, cuMemSetAccess, undone in reverse order
// when a step fails.
func (w *worker) vmmCreate(size uint64) (ptr uint64, m vmmMemory, err error) {
	d := w.dev
	m.mapped = roundUp(size, d.granularity)
	if err := call("cuMemCreate", w.drv.cuMemCreate(&m.handle, m.mapped, vmmProp(d.ordinal), 0)); err != nil {
		return 0, m, err
	}
	ptr, err = w.vmmMap(m.handle, m.mapped, AccessReadWrite)
	if err != nil {
		return 0, m, errors.Join(err, call("cuMemRelease", w.drv.cuMemRelease(m.handle)))
	}
	m.access = AccessReadWrite
	return ptr, m, nil
}

// vmmMap reserves an address range for a handle's first n bytes, maps it
// and sets the device's access to it.
func (w *worker) vmmMap(handle, n uint64, access int32) (uint64, error) {
	var ptr uint64
	if err := call("cuMemAddressReserve", w.drv.cuMemAddressReserve(&ptr, n, w.dev.granularity, 0, 0)); err != nil {
		return 0, err
	}
	if err := call("cuMemMap", w.drv.cuMemMap(ptr, n, 0, handle, 0)); err != nil {
		return 0, errors.Join(err, call("cuMemAddressFree", w.drv.cuMemAddressFree(ptr, n)))
	}
	if err := w.setAccess(ptr, n, access); err != nil {
		return 0, errors.Join(err, call("cuMemUnmap", w.drv.cuMemUnmap(ptr, n)), call("cuMemAddressFree", w.drv.cuMemAddressFree(ptr, n)))
	}
	return ptr, nil
}

func (w *worker) setAccess(ptr, n uint64, access int32) error {
	desc := &accessDesc{LocationType: memLocationDevice, LocationID: w.dev.ordinal, Flags: access}
	return call("cuMemSetAccess", w.drv.cuMemSetAccess(ptr, n, desc, 1))
}

// vmmFree undoes vmmCreate or an import: unmap, free the address range,
// release the handle. The memory itself lives on while another process
// holds a handle or a mapping of it.
func (w *worker) vmmFree(ptr uint64, m vmmMemory) error {
	if err := call("cuMemUnmap", w.drv.cuMemUnmap(ptr, m.mapped)); err != nil {
		return err
	}
	return errors.Join(call("cuMemAddressFree", w.drv.cuMemAddressFree(ptr, m.mapped)), call("cuMemRelease", w.drv.cuMemRelease(m.handle)))
}

// Export implements sealer.Exporter: a POSIX file descriptor of the
// shard's VMM allocation (cuMemExportToShareableHandle), Kind
// sealer.MemoryCUDAVMM. The consumer imports it with
// cuMemImportFromShareableHandle and maps Exported.MappedSize bytes on the
// GPU named by Exported.GPUUUID. Each call returns a new descriptor.
// Attached memory (another process's) and plain allocations (a GPU without
// VMM support) are not exported.
func (d *Device) Export(ctx context.Context, a sealer.Allocation) (sealer.Exported, error) {
	al, err := d.acquire(a, 0, 0)
	if err != nil {
		return sealer.Exported{}, err
	}
	defer al.use.RUnlock()
	switch {
	case al.vmm == nil:
		return sealer.Exported{}, d.errf(errors.New("the shard is a plain allocation (this GPU or driver has no exportable virtual memory): it cannot be handed out"))
	case al.attached:
		return sealer.Exported{}, d.errf(errors.New("attached memory is its owner's to share"))
	}
	var fd int32 = -1
	err = d.do(ctx, func(w *worker) error {
		return call("cuMemExportToShareableHandle", w.drv.cuMemExportToShareableHandle(unsafe.Pointer(&fd), al.vmm.handle, memHandlePosixFD, 0))
	})
	if err != nil {
		return sealer.Exported{}, d.errf(err)
	}
	return sealer.Exported{File: os.NewFile(uintptr(fd), "cuda-vmm"), Kind: sealer.MemoryCUDAVMM,
		MappedSize: al.vmm.mapped, GPUUUID: d.props.UUID}, nil
}

// Adopt implements sealer.Adopter for a VMM allocation another process
// exported as a POSIX file descriptor (cuMemExportToShareableHandle): the
// agent imports it, maps its first size bytes (rounded up to the
// granularity) and asks for read-only access, falling back to read-write
// where the driver refuses (the agent only reads it). Free unmaps it and
// drops the agent's handle, never the owner's memory.
func (d *Device) Adopt(ctx context.Context, memory *os.File, size uint64) (sealer.Allocation, error) {
	if d.granularity == 0 {
		return nil, d.errf(errors.New("this GPU or driver has no virtual memory management: it cannot attach memory"))
	}
	if size == 0 {
		return nil, d.errf(errors.New("cannot attach 0 bytes"))
	}
	if d.readerCmd != nil {
		a, err := d.attachRemote(ctx, memory, nil, 0, size)
		if err != nil {
			return nil, d.errf(fmt.Errorf("attaching a VMM descriptor: %w", err))
		}
		return a, nil
	}
	a := &allocation{dev: d, size: size, attached: true, vmm: &vmmMemory{mapped: roundUp(size, d.granularity)}}
	err := d.do(ctx, func(w *worker) error {
		m := a.vmm
		if err := call("cuMemImportFromShareableHandle", w.drv.cuMemImportFromShareableHandle(&m.handle, memory.Fd(), memHandlePosixFD)); err != nil {
			return err
		}
		ptr, access, err := w.importMap(m.handle, m.mapped)
		if err != nil {
			return errors.Join(err, call("cuMemRelease", w.drv.cuMemRelease(m.handle)))
		}
		a.ptr, m.access = ptr, access
		return nil
	})
	if err != nil {
		return nil, d.errf(fmt.Errorf("attaching a VMM descriptor: %w", err))
	}
	d.mu.Lock()
	d.live[a] = true
	d.mu.Unlock()
	return a, nil
}

// importMap maps an imported handle read-only, or read-write when the
// driver refuses read-only access, and says which took effect.
func (w *worker) importMap(handle, n uint64) (uint64, int32, error) {
	ptr, err := w.vmmMap(handle, n, AccessRead)
	if err == nil {
		return ptr, AccessRead, nil
	}
	ptr, err2 := w.vmmMap(handle, n, AccessReadWrite)
	if err2 != nil {
		return 0, 0, errors.Join(err, err2)
	}
	return ptr, AccessReadWrite, nil
}

// Granularity is the VMM allocation granularity shards are rounded up to;
// 0 when shards are plain allocations that cannot be handed out
// (Limitations says why).
func (d *Device) Granularity() uint64 { return d.granularity }

// freeLive frees every allocation still live, at Close.
func (d *Device) freeLive() error {
	d.mu.Lock()
	live := make([]*allocation, 0, len(d.live))
	for a := range d.live {
		live = append(live, a)
	}
	d.mu.Unlock()
	var errs []error
	for _, a := range live {
		if err := d.Free(context.Background(), a); err != nil && !errors.Is(err, sealer.ErrAllocationMissing) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
