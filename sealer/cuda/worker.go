package cuda

import (
	"context"
	"fmt"
	"runtime"
	"unsafe"
)

// job is a function run on one of the device's worker threads.
type job struct {
	fn   func(w *worker) error
	done chan error
}

// worker is one locked OS thread with the device's context current.
type worker struct {
	dev     *Device
	drv     *driver
	streams [2]uintptr
	stage   [2]unsafe.Pointer // pinned host buffers
	size    int
}

// work is one worker: it locks its OS thread, makes the primary context
// current, creates its streams and pinned buffers, and runs jobs until
// Close. The thread stays locked until the goroutine ends, so the OS
// thread, with the context current, is never reused for other Go code.
func (d *Device) work(started chan<- error) {
	defer d.wg.Done()
	runtime.LockOSThread()
	w := &worker{dev: d, drv: d.drv, size: d.staging}
	if err := w.init(d.pctx); err != nil {
		w.destroy()
		started <- err
		return
	}
	started <- nil
	defer w.destroy()
	for {
		select {
		case j := <-d.jobs:
			j.done <- j.fn(w)
		case <-d.quit:
			return
		}
	}
}

func (w *worker) init(pctx uintptr) error {
	if err := call("cuCtxSetCurrent", w.drv.cuCtxSetCurrent(pctx)); err != nil {
		return err
	}
	for i := range w.streams {
		// CU_STREAM_NON_BLOCKING: no implicit sync with the legacy stream.
		if err := call("cuStreamCreate", w.drv.cuStreamCreate(&w.streams[i], 1)); err != nil {
			return err
		}
		if err := call("cuMemHostAlloc", w.drv.cuMemHostAlloc(&w.stage[i], uint64(w.size), 0)); err != nil {
			return err
		}
	}
	return nil
}

func (w *worker) destroy() {
	for i := range w.streams {
		if w.streams[i] != 0 {
			w.drv.cuStreamSynchronize(w.streams[i])
			w.drv.cuStreamDestroy(w.streams[i])
			w.streams[i] = 0
		}
		if w.stage[i] != nil {
			w.drv.cuMemFreeHost(w.stage[i])
			w.stage[i] = nil
		}
	}
}

// buf is staging buffer i as a byte slice.
func (w *worker) buf(i int) []byte { return unsafe.Slice((*byte)(w.stage[i]), w.size) }

// do runs fn on one of the device's worker threads and waits for it.
func (d *Device) do(ctx context.Context, fn func(w *worker) error) error {
	j := job{fn: fn, done: make(chan error, 1)}
	select {
	case d.jobs <- j:
	case <-d.quit:
		return fmt.Errorf("GPU %d: %w", d.ordinal, ErrClosed)
	case <-ctx.Done():
		return ctx.Err()
	}
	return <-j.done
}
