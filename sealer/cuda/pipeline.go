package cuda

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/vramseal/vramseal/sealer"
)

// DefaultVerifyInFlight is the number of verifications on the GPU a device
// runs at once when Options.VerifyInFlight is 0: one shard's host work (the
// root over its leaf digests, the copies) overlaps the next shard's kernel.
const DefaultVerifyInFlight = 2

// digestSlot is what one verification in flight on the GPU uses, kept and
// reused from one shard to the next: a device buffer the kernel writes the
// leaf digests into and a pinned host buffer they are copied back into
// (32 bytes per leaf, grown to the largest shard seen, freed at Close).
type digestSlot struct {
	dev     uint64
	host    unsafe.Pointer
	devCap  uint64
	hostCap uint64
}

// takeSlot waits for a free slot: at most Options.VerifyInFlight
// verifications use the GPU at once.
func (d *Device) takeSlot(ctx context.Context) (*digestSlot, error) {
	select {
	case s := <-d.slots:
		select {
		case <-d.closing:
			d.slots <- s
			return nil, fmt.Errorf("GPU %d: %w", d.ordinal, ErrClosed)
		default:
		}
		return s, nil
	case <-d.closing:
		return nil, fmt.Errorf("GPU %d: %w", d.ordinal, ErrClosed)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (d *Device) putSlot(s *digestSlot) { d.slots <- s }

// freeSlots waits for every slot (the verifications in flight end) and
// frees their buffers, on a worker thread.
func (d *Device) freeSlots() error {
	var errs []error
	for range cap(d.slots) {
		s := <-d.slots
		if s.dev == 0 && s.host == nil {
			continue
		}
		errs = append(errs, d.do(context.Background(), func(w *worker) error { return w.release(s) }))
	}
	return errors.Join(errs...)
}

// release frees the slot's buffers.
func (w *worker) release(s *digestSlot) error {
	var errs []error
	if s.dev != 0 {
		errs = append(errs, call("cuMemFree_v2", w.drv.cuMemFree(s.dev)))
		s.dev, s.devCap = 0, 0
	}
	if s.host != nil {
		errs = append(errs, call("cuMemFreeHost", w.drv.cuMemFreeHost(s.host)))
		s.host, s.hostCap = nil, 0
	}
	return errors.Join(errs...)
}

// reserve grows the slot's buffers to hold need bytes of digests.
func (w *worker) reserve(s *digestSlot, need uint64) error {
	if s.devCap < need {
		if s.dev != 0 {
			w.drv.cuMemFree(s.dev)
			s.dev, s.devCap = 0, 0
		}
		if err := call("cuMemAlloc_v2", w.drv.cuMemAlloc(&s.dev, need)); err != nil {
			return fmt.Errorf("allocating the digest buffer: %w", err)
		}
		s.devCap = need
	}
	if s.hostCap < need {
		if s.host != nil {
			w.drv.cuMemFreeHost(s.host)
			s.host, s.hostCap = nil, 0
		}
		if err := call("cuMemHostAlloc", w.drv.cuMemHostAlloc(&s.host, need, 0)); err != nil {
			return fmt.Errorf("allocating the pinned digest buffer: %w", err)
		}
		s.hostCap = need
	}
	return nil
}

// hashLeaves runs the leaf kernel over the first n bytes at src on the
// worker's first stream, launch window by launch window (the context is
// checked between them), and copies the digests into the slot's pinned
// buffer. It returns when the kernels started and the time they took.
func (w *worker) hashLeaves(ctx context.Context, s *digestSlot, fn uintptr, src, n, leafSize uint64) (time.Time, time.Duration, error) {
	count := sealer.LeafCount(n, leafSize)
	if err := w.reserve(s, count*32); err != nil {
		return time.Time{}, 0, err
	}
	start := time.Now()
	per := max(1, w.dev.launchBytes/leafSize)
	for first := uint64(0); first < count; first += per {
		if err := ctx.Err(); err != nil {
			return time.Time{}, 0, err
		}
		c := min(per, count-first)
		if err := w.launch(fn, [6]uint64{src, n, leafSize, first, c, s.dev}, c); err != nil {
			return time.Time{}, 0, err
		}
		if err := call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[0])); err != nil {
			return time.Time{}, 0, fmt.Errorf("running the leaf kernel: %w", err)
		}
	}
	kernel := time.Since(start)
	if err := errors.Join(call("cuMemcpyDtoHAsync_v2", w.drv.cuMemcpyDtoHAsync(s.host, s.dev, count*32, w.streams[0])),
		call("cuStreamSynchronize", w.drv.cuStreamSynchronize(w.streams[0]))); err != nil {
		return time.Time{}, 0, fmt.Errorf("copying the leaf digests back: %w", err)
	}
	return start, kernel, nil
}

// leafBytes is the slot's pinned buffer holding count digests.
func (s *digestSlot) leafBytes(count uint64) []byte {
	return unsafe.Slice((*byte)(s.host), count*32)
}

// treeRoot is sealer.TreeRoot over leaf digests laid end to end in raw,
// hashed in one pass.
func treeRoot(n, leafSize uint64, raw []byte) [sha256.Size]byte {
	h := sha256.New()
	var hdr [len(sealer.DigestScheme) + 1 + 16]byte
	copy(hdr[:], sealer.DigestScheme)
	binary.BigEndian.PutUint64(hdr[len(sealer.DigestScheme)+1:], n)
	binary.BigEndian.PutUint64(hdr[len(sealer.DigestScheme)+9:], leafSize)
	h.Write(hdr[:])
	h.Write(raw)
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// TreeRequest is one shard for TreeDigests: its first Size bytes in
// Allocation, hashed in leaves of LeafSize.
type TreeRequest struct {
	Allocation sealer.Allocation
	Size       uint64
	LeafSize   uint64
}

// TreeResult is one shard's sha256-tree-v1 digest computed on the GPU.
type TreeResult struct {
	// Root is the tree root (sealer.FormatDigest writes it).
	Root [sha256.Size]byte
	// Leaves are the leaf digests, which locate a change.
	Leaves []sealer.LeafHash
	// KernelStart and Kernel are when the shard's leaf kernel was launched
	// and how long it ran until done; the rest of the shard's time went to
	// copies and the root on the host. Kernels of shards in flight together
	// may overlap.
	KernelStart time.Time
	Kernel      time.Duration
	// Err is this shard's failure; the other shards' results stand.
	Err error
}

// TreeDigests computes the sha256-tree-v1 digest of each shard on the
// GPU, pipelined: while one shard's leaf digests are copied back and its
// root is computed on the host, the next shard's kernel runs, with at most
// Options.VerifyInFlight shards in flight (the same bound LeafDigests
// shares) and each in-flight slot's buffers reused from shard to shard.
// The results are those of LeafDigests and sealer.TreeRoot, shard by
// shard, in the order asked. The error is ctx's when it ended first.
func (d *Device) TreeDigests(ctx context.Context, reqs []TreeRequest) ([]TreeResult, error) {
	fn, err := d.leafKernel(ctx)
	if err != nil {
		return nil, d.errf(err)
	}
	out := make([]TreeResult, len(reqs))
	var wg sync.WaitGroup
	for i, r := range reqs {
		s, err := d.takeSlot(ctx)
		if err != nil {
			wg.Wait()
			return out, err
		}
		wg.Go(func() {
			defer d.putSlot(s)
			out[i] = d.treeDigest(ctx, s, fn, i, r)
		})
	}
	wg.Wait()
	return out, ctx.Err()
}

// treeDigest is one shard of TreeDigests, holding slot s.
func (d *Device) treeDigest(ctx context.Context, s *digestSlot, fn uintptr, i int, r TreeRequest) TreeResult {
	if err := sealer.CheckLeafSize(r.LeafSize); err != nil {
		return TreeResult{Err: d.errf(err)}
	}
	if r.Size == 0 {
		return TreeResult{Err: d.errf(sealer.ErrEmpty)}
	}
	al, err := d.acquire(r.Allocation, 0, r.Size)
	if err != nil {
		return TreeResult{Err: err}
	}
	if al.remote != nil {
		leaves, err := d.leavesOnHost(ctx, al, r.Size, r.LeafSize)
		al.use.RUnlock()
		if err != nil {
			return TreeResult{Err: d.errf(err)}
		}
		return TreeResult{Root: sealer.TreeRoot(r.Size, r.LeafSize, leaves), Leaves: leaves}
	}
	var started time.Time
	var kernel time.Duration
	err = d.do(ctx, func(w *worker) error {
		var err error
		started, kernel, err = w.hashLeaves(ctx, s, fn, al.ptr, r.Size, r.LeafSize)
		return err
	})
	al.use.RUnlock()
	if err != nil {
		return TreeResult{Err: d.errf(al.contain(err))}
	}
	// Host work, overlapping the next shard's kernel.
	if d.beforeRoot != nil {
		d.beforeRoot(i)
	}
	count := sealer.LeafCount(r.Size, r.LeafSize)
	raw := s.leafBytes(count)
	res := TreeResult{Root: treeRoot(r.Size, r.LeafSize, raw), Leaves: make([]sealer.LeafHash, count),
		KernelStart: started, Kernel: kernel}
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&res.Leaves[0])), count*32), raw)
	return res
}
