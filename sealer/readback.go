package sealer

import (
	"context"
	"crypto/sha256"
	"runtime"
	"sync"
)

// bufferSource hands out read buffers of one size; get waits, holding
// nothing, until one is free or ctx ends.
type bufferSource interface {
	get(ctx context.Context) ([]byte, error)
	put(b []byte)
	size() uint64
}

func (p *BufferPool) get(ctx context.Context) ([]byte, error) { return p.Get(ctx) }
func (p *BufferPool) put(b []byte)                            { p.Put(b) }
func (p *BufferPool) size() uint64                            { return BufferSize }

// localBuffers is a small pool of heap buffers for one stream or one
// read-back (DigestReader, ReadBackLeaves): it keeps up to keep of them for
// reuse and allocates beyond.
type localBuffers struct {
	n    uint64
	free chan []byte
}

func newLocalBuffers(n uint64, keep int) *localBuffers {
	return &localBuffers{n: n, free: make(chan []byte, keep)}
}

func (l *localBuffers) get(context.Context) ([]byte, error) {
	select {
	case b := <-l.free:
		return b, nil
	default:
		return make([]byte, l.n), nil
	}
}

func (l *localBuffers) put(b []byte) {
	select {
	case l.free <- b:
	default:
	}
}

func (l *localBuffers) size() uint64 { return l.n }

// ReadBackLeaves reads an allocation back to host memory in runs of leaves,
// on workers goroutines, and hashes each leaf. A Pacer in ctx (WithPacer) is
// asked before each run is read. It allocates its buffers on each call: it
// is for tools; a Sealer reads back through its BufferPool.
func ReadBackLeaves(ctx context.Context, dev Device, a Allocation, n, leafSize uint64, workers int) ([]LeafHash, error) {
	return readBack(ctx, dev, a, n, leafSize, workers, newLocalBuffers(max(uint64(BufferSize), leafSize), max(workers, runtime.GOMAXPROCS(0))))
}

// readBack is ReadBackLeaves with its buffers taken from bufs, one per run
// and given back after it: a worker waiting for a buffer holds none. A run
// is as many whole leaves as a buffer holds; a leaf larger than a buffer is
// read and hashed in pieces.
func readBack(ctx context.Context, dev Device, a Allocation, n, leafSize uint64, workers int, bufs bufferSource) ([]LeafHash, error) {
	count := LeafCount(n, leafSize)
	leaves := make([]LeafHash, count)
	bsize := bufs.size()
	per := max(1, bsize/leafSize) // leaves per run
	runs := int((count + per - 1) / per)
	var (
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		firstErr = cmpErr(firstErr, err)
		errMu.Unlock()
	}
	parallelLeaves(runs, workers, func(r int) {
		errMu.Lock()
		stop := firstErr != nil
		errMu.Unlock()
		if stop {
			return
		}
		if err := ctx.Err(); err != nil {
			fail(err)
			return
		}
		buf, err := bufs.get(ctx)
		if err != nil {
			fail(err)
			return
		}
		defer bufs.put(buf)
		lo := uint64(r) * per * leafSize
		hi := min(lo+per*leafSize, n)
		if leafSize <= bsize {
			b := buf[:hi-lo]
			err := pace(ctx, hi-lo)
			if err == nil {
				err = dev.Read(ctx, a, lo, b)
			}
			if err != nil {
				fail(err)
				return
			}
			for off := uint64(0); off < uint64(len(b)); off += leafSize {
				leaves[(lo+off)/leafSize] = sha256.Sum256(b[off:min(off+leafSize, uint64(len(b)))])
			}
			return
		}
		// One leaf, larger than the buffer: hash it piece by piece.
		h := sha256.New()
		for off := lo; off < hi; off += bsize {
			b := buf[:min(bsize, hi-off)]
			err := pace(ctx, uint64(len(b)))
			if err == nil {
				err = dev.Read(ctx, a, off, b)
			}
			if err != nil {
				fail(err)
				return
			}
			h.Write(b)
		}
		h.Sum(leaves[lo/leafSize][:0])
	})
	if firstErr != nil {
		return nil, firstErr
	}
	return leaves, nil
}

func cmpErr(have, err error) error {
	if have != nil {
		return have
	}
	return err
}
