package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/ebitengine/purego"
)

// driver is the part of the CUDA driver API vramseal calls, bound to the
// symbols of a loaded libcuda. Every function returns a CUresult.
type driver struct {
	lib library
	// path is the library's file (Device.Library).
	path string

	cuInit             func(flags uint32) Result
	cuDriverGetVersion func(v *int32) Result
	cuDeviceGetCount   func(n *int32) Result
	cuDeviceGet        func(dev *int32, ordinal int32) Result
	cuDeviceGetName    func(name *byte, size int32, dev int32) Result
	cuDeviceGetUuid    func(uuid *[16]byte, dev int32) Result
	// cuDeviceGetUuidLegacy and cuDevicePrimaryCtxSetFlags are optional
	// (nil when the driver lacks them): each serves one feature, which is
	// reported unknown or off without it (Device.Limitations); Open never
	// fails for one.
	cuDeviceGetUuidLegacy      func(uuid *[16]byte, dev int32) Result
	cuDeviceGetAttribute       func(v *int32, attr int32, dev int32) Result
	cuDeviceTotalMem           func(bytes *uint64, dev int32) Result
	cuDevicePrimaryCtxRetain   func(ctx *uintptr, dev int32) Result
	cuDevicePrimaryCtxRelease  func(dev int32) Result
	cuDevicePrimaryCtxSetFlags func(dev int32, flags uint32) Result
	cuCtxSetCurrent            func(ctx uintptr) Result
	cuMemGetInfo               func(free, total *uint64) Result
	cuMemAlloc                 func(dptr *uint64, size uint64) Result
	cuMemFree                  func(dptr uint64) Result
	cuMemHostAlloc             func(p *unsafe.Pointer, size uint64, flags uint32) Result
	cuMemFreeHost              func(p unsafe.Pointer) Result
	cuMemcpyHtoDAsync          func(dst uint64, src unsafe.Pointer, n uint64, stream uintptr) Result
	cuMemcpyDtoHAsync          func(dst unsafe.Pointer, src uint64, n uint64, stream uintptr) Result
	cuMemcpyDtoDAsync          func(dst, src uint64, n uint64, stream uintptr) Result
	cuStreamCreate             func(s *uintptr, flags uint32) Result
	cuStreamDestroy            func(s uintptr) Result
	cuStreamSynchronize        func(s uintptr) Result
	cuPointerGetAttribute      func(data unsafe.Pointer, attr int32, ptr uint64) Result
	cuModuleLoadDataEx         func(m *uintptr, image *byte, n uint32, opts *int32, vals *uintptr) Result
	cuModuleUnload             func(m uintptr) Result
	cuModuleGetFunction        func(f *uintptr, m uintptr, name string) Result
	cuLaunchKernel             func(f uintptr, gx, gy, gz, bx, by, bz, shmem uint32, stream uintptr, params *unsafe.Pointer, extra *unsafe.Pointer) Result

	// Virtual memory management (vmm.go): optional as a group. Without
	// any of them, shards are plain cuMemAlloc allocations that cannot be
	// handed to consumers (Device.Limitations).
	cuMemGetAllocationGranularity  func(g *uint64, prop *allocProp, option int32) Result
	cuMemCreate                    func(h *uint64, size uint64, prop *allocProp, flags uint64) Result
	cuMemRelease                   func(h uint64) Result
	cuMemAddressReserve            func(ptr *uint64, size, align, addr, flags uint64) Result
	cuMemAddressFree               func(ptr, size uint64) Result
	cuMemMap                       func(ptr, size, offset, h, flags uint64) Result
	cuMemUnmap                     func(ptr, size uint64) Result
	cuMemSetAccess                 func(ptr, size uint64, desc *accessDesc, count uint64) Result
	cuMemExportToShareableHandle   func(out unsafe.Pointer, h uint64, kind int32, flags uint64) Result
	cuMemImportFromShareableHandle func(h *uint64, os uintptr, kind int32) Result
	// Legacy IPC (attach of a PyTorch storage): optional as a group.
	cuIpcOpenMemHandle   func(ptr *uint64, h IPCHandle, flags uint32) Result
	cuIpcCloseMemHandle  func(ptr uint64) Result
	cuMemGetAddressRange func(base, size *uint64, ptr uint64) Result
}

// symbol binds one driver function: the first of names the library exports
// (newest ABI first) is registered into fn. An optional symbol the library
// lacks leaves fn nil.
type symbol struct {
	fn       any
	names    []string
	optional bool
}

func (d *driver) symbols() []symbol {
	return []symbol{
		{&d.cuInit, []string{"cuInit"}, false},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}, false},
		{&d.cuDeviceGetCount, []string{"cuDeviceGetCount"}, false},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}, false},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}, false},
		{&d.cuDeviceGetUuid, []string{"cuDeviceGetUuid_v2", "cuDeviceGetUuid"}, false},
		// The legacy call, before CUDA 13 the physical GPU's UUID even for
		// a MIG instance: compared with the above, it tells a MIG instance.
		{&d.cuDeviceGetUuidLegacy, []string{"cuDeviceGetUuid"}, true},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}, false},
		{&d.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}, false},
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}, false},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}, false},
		{&d.cuDevicePrimaryCtxSetFlags, []string{"cuDevicePrimaryCtxSetFlags_v2"}, true},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}, false},
		{&d.cuMemGetInfo, []string{"cuMemGetInfo_v2"}, false},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}, false},
		{&d.cuMemFree, []string{"cuMemFree_v2"}, false},
		{&d.cuMemHostAlloc, []string{"cuMemHostAlloc"}, false},
		{&d.cuMemFreeHost, []string{"cuMemFreeHost"}, false},
		{&d.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}, false},
		{&d.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}, false},
		{&d.cuMemcpyDtoDAsync, []string{"cuMemcpyDtoDAsync_v2"}, false},
		{&d.cuStreamCreate, []string{"cuStreamCreate"}, false},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}, false},
		{&d.cuStreamSynchronize, []string{"cuStreamSynchronize"}, false},
		{&d.cuPointerGetAttribute, []string{"cuPointerGetAttribute"}, false},
		{&d.cuModuleLoadDataEx, []string{"cuModuleLoadDataEx"}, false},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}, false},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}, false},
		{&d.cuLaunchKernel, []string{"cuLaunchKernel"}, false},
		{&d.cuMemGetAllocationGranularity, []string{"cuMemGetAllocationGranularity"}, true},
		{&d.cuMemCreate, []string{"cuMemCreate"}, true},
		{&d.cuMemRelease, []string{"cuMemRelease"}, true},
		{&d.cuMemAddressReserve, []string{"cuMemAddressReserve"}, true},
		{&d.cuMemAddressFree, []string{"cuMemAddressFree"}, true},
		{&d.cuMemMap, []string{"cuMemMap"}, true},
		{&d.cuMemUnmap, []string{"cuMemUnmap"}, true},
		{&d.cuMemSetAccess, []string{"cuMemSetAccess"}, true},
		{&d.cuMemExportToShareableHandle, []string{"cuMemExportToShareableHandle"}, true},
		{&d.cuMemImportFromShareableHandle, []string{"cuMemImportFromShareableHandle"}, true},
		{&d.cuIpcOpenMemHandle, []string{"cuIpcOpenMemHandle_v2", "cuIpcOpenMemHandle"}, true},
		{&d.cuIpcCloseMemHandle, []string{"cuIpcCloseMemHandle"}, true},
		{&d.cuMemGetAddressRange, []string{"cuMemGetAddressRange_v2"}, true},
	}
}

// bind looks up every symbol. A missing one is an error naming it: the
// driver is older than vramseal supports (or not a CUDA driver).
func bind(lib library) (*driver, error) {
	d := &driver{lib: lib}
	for _, s := range d.symbols() {
		var addr uintptr
		var errs []error
		for _, name := range s.names {
			p, err := lib.Sym(name)
			if err == nil && p != 0 {
				addr = p
				break
			}
			errs = append(errs, err)
		}
		if addr == 0 && s.optional {
			continue
		}
		if addr == 0 {
			return nil, fmt.Errorf("the driver lacks %s (too old for vramseal, which needs CUDA 12 or newer): %w",
				s.names[0], errors.Join(errs...))
		}
		purego.RegisterFunc(s.fn, addr)
	}
	return d, nil
}

// hasVMM reports whether every virtual memory management call is bound.
func (d *driver) hasVMM() bool {
	return d.cuMemGetAllocationGranularity != nil && d.cuMemCreate != nil && d.cuMemRelease != nil &&
		d.cuMemAddressReserve != nil && d.cuMemAddressFree != nil && d.cuMemMap != nil && d.cuMemUnmap != nil &&
		d.cuMemSetAccess != nil && d.cuMemExportToShareableHandle != nil && d.cuMemImportFromShareableHandle != nil
}

// hasIPC reports whether the legacy IPC calls are bound.
func (d *driver) hasIPC() bool {
	return d.cuIpcOpenMemHandle != nil && d.cuIpcCloseMemHandle != nil && d.cuMemGetAddressRange != nil
}

// call turns a CUresult into an error naming the function.
func call(fn string, r Result) error {
	if r == Success {
		return nil
	}
	return &CallError{Func: fn, Result: r}
}

// CallError is a failed driver call: the function and its CUresult.
// errors.As(err, new(Result)) does not match it; use errors.As with a
// *CallError, or errors.Is(err, cuda.ResultOutOfMemory).
type CallError struct {
	Func   string
	Result Result
}

func (e *CallError) Error() string { return e.Func + ": " + e.Result.Error() }

// Unwrap returns the Result, so errors.Is(err, cuda.ResultOutOfMemory) and
// errors.Is(err, sealer.ErrOutOfMemory) both hold for an allocation that
// did not fit.
func (e *CallError) Unwrap() error { return e.Result }
