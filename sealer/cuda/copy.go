package cuda

import (
	"context"
	"errors"

	"github.com/vramseal/vramseal/sealer"
)

// Write copies p into the allocation at off through the pinned staging
// buffers, two copies in flight on two streams.
func (d *Device) Write(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	al, err := d.acquire(a, off, uint64(len(p)))
	if err != nil {
		return err
	}
	defer al.use.RUnlock()
	if al.attached {
		return d.errf(errors.New("attached memory is its owner's: the agent never writes to it"))
	}
	return d.errf(d.do(ctx, func(w *worker) error { return w.write(ctx, al.ptr+off, p) }))
}

// Read copies len(p) bytes of the allocation at off into p through the
// pinned staging buffers, the next copy in flight while the last is
// unpacked.
func (d *Device) Read(ctx context.Context, a sealer.Allocation, off uint64, p []byte) error {
	al, err := d.acquire(a, off, uint64(len(p)))
	if err != nil {
		return err
	}
	defer al.use.RUnlock()
	if al.remote != nil {
		return d.errf(al.contain(al.remote.read(ctx, off, p)))
	}
	return d.errf(al.contain(d.do(ctx, func(w *worker) error { return w.read(ctx, p, al.ptr+off) })))
}

// write copies p to device address dst in staging-sized chunks,
// alternating buffers and streams: while one chunk's DMA runs, the next is
// packed into the other buffer.
func (w *worker) write(ctx context.Context, dst uint64, p []byte) (err error) {
	var busy [2]bool
	defer func() { err = errors.Join(err, w.drain(&busy)) }()
	for i, off := 0, 0; off < len(p); i, off = i+1, off+w.size {
		if err := ctx.Err(); err != nil {
			return err
		}
		k := i % 2
		if busy[k] {
			busy[k] = false
			if err := call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[k])); err != nil {
				return err
			}
		}
		n := copy(w.buf(k), p[off:])
		if err := call("cuMemcpyHtoDAsync_v2", w.drv.cuMemcpyHtoDAsync(dst+uint64(off), w.stage[k], uint64(n), w.streams[k])); err != nil {
			return err
		}
		busy[k] = true
	}
	return nil
}

// read copies device address src into p: chunk i+1's DMA is in flight while
// chunk i is unpacked from its staging buffer.
func (w *worker) read(ctx context.Context, p []byte, src uint64) (err error) {
	var busy [2]bool
	defer func() { err = errors.Join(err, w.drain(&busy)) }()
	chunks := (len(p) + w.size - 1) / w.size
	issue := func(i int) error {
		off := i * w.size
		n := min(w.size, len(p)-off)
		k := i % 2
		busy[k] = true
		return call("cuMemcpyDtoHAsync_v2", w.drv.cuMemcpyDtoHAsync(w.stage[k], src+uint64(off), uint64(n), w.streams[k]))
	}
	if chunks > 0 {
		if err := issue(0); err != nil {
			return err
		}
	}
	for i := range chunks {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i+1 < chunks {
			if err := issue(i + 1); err != nil {
				return err
			}
		}
		k := i % 2
		busy[k] = false
		if err := call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[k])); err != nil {
			return err
		}
		off := i * w.size
		copy(p[off:min(off+w.size, len(p))], w.buf(k))
	}
	return nil
}

// drain waits for the streams still busy, so a staging buffer is never
// reused or freed under a copy.
func (w *worker) drain(busy *[2]bool) error {
	var errs []error
	for k := range busy {
		if busy[k] {
			busy[k] = false
			errs = append(errs, call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[k])))
		}
	}
	return errors.Join(errs...)
}
