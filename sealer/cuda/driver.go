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

	cuInit                     func(flags uint32) Result
	cuDriverGetVersion         func(v *int32) Result
	cuDeviceGetCount           func(n *int32) Result
	cuDeviceGet                func(dev *int32, ordinal int32) Result
	cuDeviceGetName            func(name *byte, size int32, dev int32) Result
	cuDeviceGetUuid            func(uuid *[16]byte, dev int32) Result
	cuDeviceGetUuidV1          func(uuid *[16]byte, dev int32) Result
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
}

// symbol binds one driver function: the first of names the library exports
// (newest ABI first) is registered into fn.
type symbol struct {
	fn    any
	names []string
}

func (d *driver) symbols() []symbol {
	return []symbol{
		{&d.cuInit, []string{"cuInit"}},
		{&d.cuDriverGetVersion, []string{"cuDriverGetVersion"}},
		{&d.cuDeviceGetCount, []string{"cuDeviceGetCount"}},
		{&d.cuDeviceGet, []string{"cuDeviceGet"}},
		{&d.cuDeviceGetName, []string{"cuDeviceGetName"}},
		{&d.cuDeviceGetUuid, []string{"cuDeviceGetUuid_v2"}},
		{&d.cuDeviceGetUuidV1, []string{"cuDeviceGetUuid"}},
		{&d.cuDeviceGetAttribute, []string{"cuDeviceGetAttribute"}},
		{&d.cuDeviceTotalMem, []string{"cuDeviceTotalMem_v2"}},
		{&d.cuDevicePrimaryCtxRetain, []string{"cuDevicePrimaryCtxRetain"}},
		{&d.cuDevicePrimaryCtxRelease, []string{"cuDevicePrimaryCtxRelease_v2", "cuDevicePrimaryCtxRelease"}},
		{&d.cuDevicePrimaryCtxSetFlags, []string{"cuDevicePrimaryCtxSetFlags_v2"}},
		{&d.cuCtxSetCurrent, []string{"cuCtxSetCurrent"}},
		{&d.cuMemGetInfo, []string{"cuMemGetInfo_v2"}},
		{&d.cuMemAlloc, []string{"cuMemAlloc_v2"}},
		{&d.cuMemFree, []string{"cuMemFree_v2"}},
		{&d.cuMemHostAlloc, []string{"cuMemHostAlloc"}},
		{&d.cuMemFreeHost, []string{"cuMemFreeHost"}},
		{&d.cuMemcpyHtoDAsync, []string{"cuMemcpyHtoDAsync_v2"}},
		{&d.cuMemcpyDtoHAsync, []string{"cuMemcpyDtoHAsync_v2"}},
		{&d.cuMemcpyDtoDAsync, []string{"cuMemcpyDtoDAsync_v2"}},
		{&d.cuStreamCreate, []string{"cuStreamCreate"}},
		{&d.cuStreamDestroy, []string{"cuStreamDestroy_v2", "cuStreamDestroy"}},
		{&d.cuStreamSynchronize, []string{"cuStreamSynchronize"}},
		{&d.cuPointerGetAttribute, []string{"cuPointerGetAttribute"}},
		{&d.cuModuleLoadDataEx, []string{"cuModuleLoadDataEx"}},
		{&d.cuModuleUnload, []string{"cuModuleUnload"}},
		{&d.cuModuleGetFunction, []string{"cuModuleGetFunction"}},
		{&d.cuLaunchKernel, []string{"cuLaunchKernel"}},
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
		if addr == 0 {
			return nil, fmt.Errorf("the driver lacks %s (too old for vramseal, which needs CUDA 12 or newer): %w",
				s.names[0], errors.Join(errs...))
		}
		purego.RegisterFunc(s.fn, addr)
	}
	return d, nil
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
