package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/ebitengine/purego"

	"github.com/vramseal/vramseal/sealer"
	"github.com/vramseal/vramseal/sealer/cuda"
)

// CUDA is the NVIDIA driver (libcuda.so.1) loaded into the consumer's
// process, to import shards the agent hands out as CUDA VMM allocations
// (Lease.Memory "cuda_vmm"). It is loaded at run time (dlopen, through
// purego), so programs using this package build and run without it. Once
// loaded it stays loaded for the life of the process. Safe for concurrent
// use.
type CUDA struct {
	cuInit                         func(flags uint32) cuda.Result
	cuDeviceGetCount               func(n *int32) cuda.Result
	cuDeviceGet                    func(dev *int32, ordinal int32) cuda.Result
	cuDeviceGetUuid                func(uuid *[16]byte, dev int32) cuda.Result
	cuDevicePrimaryCtxRetain       func(ctx *uintptr, dev int32) cuda.Result
	cuDevicePrimaryCtxRelease      func(dev int32) cuda.Result
	cuCtxSetCurrent                func(ctx uintptr) cuda.Result
	cuMemImportFromShareableHandle func(h *uint64, os uintptr, kind int32) cuda.Result
	cuMemAddressReserve            func(ptr *uint64, size, align, addr, flags uint64) cuda.Result
	cuMemAddressFree               func(ptr, size uint64) cuda.Result
	cuMemMap                       func(ptr, size, offset, h, flags uint64) cuda.Result
	cuMemUnmap                     func(ptr, size uint64) cuda.Result
	cuMemSetAccess                 func(ptr, size uint64, desc *accessDesc, count uint64) cuda.Result
	cuMemRelease                   func(h uint64) cuda.Result
	cuMemcpyDtoH                   func(dst *byte, src uint64, n uint64) cuda.Result
}

// accessDesc is CUmemAccessDesc.
type accessDesc struct{ LocationType, LocationID, Flags int32 }

// OpenCUDA loads the driver library at path (cuda.DefaultLibrary, found by
// the loader's search, when "") and initialises it.
func OpenCUDA(path string) (*CUDA, error) {
	if path == "" {
		path = cuda.DefaultLibrary
	}
	h, err := purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_LOCAL)
	if err != nil {
		return nil, fmt.Errorf("loading the CUDA driver: %w", err)
	}
	c := &CUDA{}
	for name, fn := range map[string]any{
		"cuInit": &c.cuInit, "cuDeviceGetCount": &c.cuDeviceGetCount, "cuDeviceGet": &c.cuDeviceGet,
		"cuDeviceGetUuid_v2": &c.cuDeviceGetUuid, "cuDevicePrimaryCtxRetain": &c.cuDevicePrimaryCtxRetain,
		"cuDevicePrimaryCtxRelease_v2": &c.cuDevicePrimaryCtxRelease, "cuCtxSetCurrent": &c.cuCtxSetCurrent,
		"cuMemImportFromShareableHandle": &c.cuMemImportFromShareableHandle, "cuMemAddressReserve": &c.cuMemAddressReserve,
		"cuMemAddressFree": &c.cuMemAddressFree, "cuMemMap": &c.cuMemMap, "cuMemUnmap": &c.cuMemUnmap,
		"cuMemSetAccess": &c.cuMemSetAccess, "cuMemRelease": &c.cuMemRelease, "cuMemcpyDtoH_v2": &c.cuMemcpyDtoH,
	} {
		p, err := purego.Dlsym(h, name)
		if err != nil {
			_ = purego.Dlclose(h)
			return nil, fmt.Errorf("the CUDA driver %s lacks %s: %w", path, name, err)
		}
		purego.RegisterFunc(fn, p)
	}
	// From here on the library stays loaded: the driver's own threads run its code.
	if err := check("cuInit", c.cuInit(0)); err != nil {
		return nil, err
	}
	return c, nil
}

func check(fn string, r cuda.Result) error {
	if r == cuda.Success {
		return nil
	}
	return &cuda.CallError{Func: fn, Result: r}
}

// device finds the CUDA ordinal of the GPU with the given UUID: the
// agent's ordinals need not be this process's (CUDA_VISIBLE_DEVICES).
func (c *CUDA) device(uuid string) (int32, error) {
	var n int32
	if err := check("cuDeviceGetCount", c.cuDeviceGetCount(&n)); err != nil {
		return 0, err
	}
	for i := range n {
		var dev int32
		var u [16]byte
		if err := errors.Join(check("cuDeviceGet", c.cuDeviceGet(&dev, i)), check("cuDeviceGetUuid_v2", c.cuDeviceGetUuid(&u, dev))); err != nil {
			return 0, err
		}
		if cuda.FormatUUID(u) == uuid {
			return dev, nil
		}
	}
	return 0, fmt.Errorf("no GPU %s among this process's %d CUDA device(s) (check CUDA_VISIBLE_DEVICES)", uuid, n)
}

// CUDAMapping is a shard imported into this process's primary context of
// its GPU: Ptr is its device address, for the engine's kernels. Close it
// (and Close the lease) when done.
type CUDAMapping struct {
	// Ptr is the shard's device address; Size its size in bytes, Mapped
	// the bytes mapped (Size rounded up to the granularity).
	Ptr, Size, Mapped uint64
	// Device is the CUDA ordinal of its GPU in this process.
	Device int
	// ReadOnly tells whether the driver granted read-only access
	// (CU_MEM_ACCESS_FLAGS_PROT_READ). Where it refused, the mapping is
	// read-write: read-only is advisory, the agent's verification is the
	// guarantee.
	ReadOnly bool

	c      *CUDA
	pctx   uintptr
	handle uint64
	mu     sync.Mutex
	closed bool
}

// Import imports a "cuda_vmm" lease's memory on the GPU it names:
// cuMemImportFromShareableHandle, cuMemAddressReserve, cuMemMap, then
// cuMemSetAccess asking for read-only access and falling back to read-write
// where the driver refuses. The lease's File may be closed afterwards.
func (c *CUDA) Import(ctx context.Context, l *Lease) (*CUDAMapping, error) {
	if l.Memory != sealer.MemoryCUDAVMM {
		return nil, fmt.Errorf("%s: %s memory is not CUDA memory", l.id, l.Memory)
	}
	if l.MappedSize < l.Size || l.Size == 0 {
		return nil, fmt.Errorf("%s: the agent announced %d mapped bytes for a %d-byte shard", l.id, l.MappedSize, l.Size)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := c.device(l.GPUUUID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.id, err)
	}
	m := &CUDAMapping{Size: l.Size, Mapped: l.MappedSize, Device: int(dev), c: c}
	if err := check("cuDevicePrimaryCtxRetain", c.cuDevicePrimaryCtxRetain(&m.pctx, dev)); err != nil {
		return nil, fmt.Errorf("%s: %w", l.id, err)
	}
	undo := []func() error{func() error { return check("cuDevicePrimaryCtxRelease_v2", c.cuDevicePrimaryCtxRelease(dev)) }}
	fail := func(err error) (*CUDAMapping, error) {
		for i := len(undo) - 1; i >= 0; i-- {
			err = errors.Join(err, undo[i]())
		}
		return nil, fmt.Errorf("%s: importing CUDA memory: %w", l.id, err)
	}
	if err := check("cuCtxSetCurrent", c.cuCtxSetCurrent(m.pctx)); err != nil {
		return fail(err)
	}
	if err := check("cuMemImportFromShareableHandle", c.cuMemImportFromShareableHandle(&m.handle, l.File.Fd(), 1)); err != nil {
		return fail(err)
	}
	undo = append(undo, func() error { return check("cuMemRelease", c.cuMemRelease(m.handle)) })
	if err := check("cuMemAddressReserve", c.cuMemAddressReserve(&m.Ptr, m.Mapped, 0, 0, 0)); err != nil {
		return fail(err)
	}
	undo = append(undo, func() error { return check("cuMemAddressFree", c.cuMemAddressFree(m.Ptr, m.Mapped)) })
	if err := check("cuMemMap", c.cuMemMap(m.Ptr, m.Mapped, 0, m.handle, 0)); err != nil {
		return fail(err)
	}
	undo = append(undo, func() error { return check("cuMemUnmap", c.cuMemUnmap(m.Ptr, m.Mapped)) })
	ro := check("cuMemSetAccess(PROT_READ)", c.cuMemSetAccess(m.Ptr, m.Mapped, &accessDesc{1, dev, cuda.AccessRead}, 1))
	m.ReadOnly = ro == nil
	if ro != nil {
		if err := check("cuMemSetAccess(PROT_READWRITE)", c.cuMemSetAccess(m.Ptr, m.Mapped, &accessDesc{1, dev, cuda.AccessReadWrite}, 1)); err != nil {
			return fail(errors.Join(ro, err))
		}
	}
	return m, nil
}

// ReadAt copies len(p) bytes of the shard at off into p (cuMemcpyDtoH),
// e.g. to hash it.
func (m *CUDAMapping) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || uint64(off) > m.Size || uint64(len(p)) > m.Size-uint64(off) {
		return 0, fmt.Errorf("read of [%d, %d) outside a %d-byte shard", off, off+int64(len(p)), m.Size)
	}
	if len(p) == 0 {
		return 0, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, errors.New("CUDA mapping closed")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := errors.Join(check("cuCtxSetCurrent", m.c.cuCtxSetCurrent(m.pctx)),
		check("cuMemcpyDtoH_v2", m.c.cuMemcpyDtoH(&p[0], m.Ptr+uint64(off), uint64(len(p))))); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close unmaps the shard, frees its address range, releases the imported
// handle and the primary context, in that order. It is safe to call twice.
func (m *CUDAMapping) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c := m.c
	if err := check("cuCtxSetCurrent", c.cuCtxSetCurrent(m.pctx)); err != nil {
		return err
	}
	return errors.Join(check("cuMemUnmap", c.cuMemUnmap(m.Ptr, m.Mapped)), check("cuMemAddressFree", c.cuMemAddressFree(m.Ptr, m.Mapped)),
		check("cuMemRelease", c.cuMemRelease(m.handle)), check("cuDevicePrimaryCtxRelease_v2", c.cuDevicePrimaryCtxRelease(int32(m.Device))))
}
