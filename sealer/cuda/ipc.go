package cuda

import (
	"context"
	"errors"
	"fmt"

	"github.com/vramseal/vramseal/sealer"
)

// IPCHandle is a legacy CUDA IPC memory handle (CUipcMemHandle, 64 opaque
// bytes): what cuIpcGetMemHandle, and PyTorch for a storage's allocator
// segment, export.
type IPCHandle struct{ Reserved [sealer.IPCHandleSize]byte }

// ipcLazyEnablePeerAccess is CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS.
const ipcLazyEnablePeerAccess = 1

// ipcSegment is an allocator segment of another process opened from its
// legacy IPC handle: opened once per process, shared by every attachment
// in it, closed with the last.
type ipcSegment struct {
	handle IPCHandle
	base   uint64
	size   uint64
	refs   int
}

var _ sealer.IPCAdopter = (*Device)(nil)

// AdoptIPC implements sealer.IPCAdopter: it opens the owner's segment
// (cuIpcOpenMemHandle, once per handle; later attachments of the same
// handle share it), checks that [offset, offset+size) lies inside it
// (cuMemGetAddressRange) and returns those bytes as an attached
// allocation. Legacy IPC works only between processes in one pid
// namespace; the sealer refuses it otherwise.
func (d *Device) AdoptIPC(ctx context.Context, handle [sealer.IPCHandleSize]byte, offset, size uint64) (sealer.Allocation, error) {
	if !d.drv.hasIPC() {
		return nil, d.errf(errors.New("the driver lacks the legacy IPC calls (cuIpcOpenMemHandle): it cannot attach an IPC handle"))
	}
	if size == 0 {
		return nil, d.errf(errors.New("cannot attach 0 bytes"))
	}
	if d.readerCmd != nil {
		a, err := d.attachRemote(ctx, nil, &handle, offset, size)
		if err != nil {
			return nil, d.errf(err)
		}
		return a, nil
	}
	h := IPCHandle{Reserved: handle}
	// d.ipcMu serialises opening and closing, so a handle is never opened
	// twice in this process (the driver refuses that).
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	seg := d.ipc[h]
	if seg == nil {
		seg = &ipcSegment{handle: h}
		err := d.do(ctx, func(w *worker) error {
			if err := call("cuIpcOpenMemHandle_v2", w.drv.cuIpcOpenMemHandle(&seg.base, h, ipcLazyEnablePeerAccess)); err != nil {
				return err
			}
			var base uint64
			if err := call("cuMemGetAddressRange_v2", w.drv.cuMemGetAddressRange(&base, &seg.size, seg.base)); err != nil {
				return errors.Join(err, call("cuIpcCloseMemHandle", w.drv.cuIpcCloseMemHandle(seg.base)))
			}
			return nil
		})
		if err != nil {
			return nil, d.errf(fmt.Errorf("opening a CUDA IPC handle: %w", err))
		}
	}
	if offset > seg.size || size > seg.size-offset {
		err := fmt.Errorf("[%d, %d) lies outside the %d-byte segment the IPC handle names", offset, offset+size, seg.size)
		if seg.refs == 0 {
			err = errors.Join(err, d.closeSegment(seg))
		}
		return nil, d.errf(err)
	}
	seg.refs++
	d.ipc[h] = seg
	return d.track(&allocation{dev: d, ptr: seg.base + offset, size: size, attached: true, ipc: seg}), nil
}

// track makes a live.
func (d *Device) track(a *allocation) *allocation {
	d.mu.Lock()
	d.live[a] = true
	d.mu.Unlock()
	return a
}

// closeSegment closes an IPC segment nobody uses. Call with d.ipcMu held.
func (d *Device) closeSegment(seg *ipcSegment) error {
	delete(d.ipc, seg.handle)
	return d.do(context.Background(), func(w *worker) error {
		return call("cuIpcCloseMemHandle", w.drv.cuIpcCloseMemHandle(seg.base))
	})
}

// dropSegment ends one attachment of an IPC segment, closing it with the
// last.
func (d *Device) dropSegment(seg *ipcSegment) error {
	d.ipcMu.Lock()
	defer d.ipcMu.Unlock()
	if seg.refs--; seg.refs > 0 {
		return nil
	}
	return d.closeSegment(seg)
}

// AttachedFault is the error of an operation on attached memory that hit a
// sticky CUDA error (the owner freed or lost the memory): it is contained
// to that attachment. The allocation is marked faulted, every later
// operation on it fails at once without calling the driver, and the error
// wraps sealer.ErrAllocationMissing, never sealer.ErrDeviceLost: the
// agent's other shards on the GPU are not given up for it.
type AttachedFault struct{ Err *CallError }

func (e *AttachedFault) Error() string {
	return "attached memory became unreadable (did its owner free it?): " + e.Err.Error()
}

// Is makes errors.Is(err, sealer.ErrAllocationMissing) hold.
func (e *AttachedFault) Is(target error) bool { return target == sealer.ErrAllocationMissing }

// contain turns a sticky error of an operation on attached memory into an
// AttachedFault and marks the allocation faulted.
func (al *allocation) contain(err error) error {
	var f *AttachedFault
	var ce *CallError
	switch {
	case !al.attached:
		return err
	case errors.As(err, &f):
	case errors.As(err, &ce) && ce.Result.sticky():
		f = &AttachedFault{Err: ce}
	default:
		return err
	}
	al.faultMu.Lock()
	if al.fault == nil {
		al.fault = f
	}
	al.faultMu.Unlock()
	return f
}

// faulted returns the allocation's contained fault, if any.
func (al *allocation) faulted() error {
	al.faultMu.Lock()
	defer al.faultMu.Unlock()
	if al.fault == nil {
		return nil
	}
	return al.fault
}
