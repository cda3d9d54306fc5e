package sealer

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"runtime"
	"strings"
	"sync"
)

// DigestScheme names the seal digest's construction (docs/digest.md).
const DigestScheme = "sha256-tree-v1"

// Leaf size bounds and default (bytes).
const (
	MinLeafSize     = 4 << 10
	MaxLeafSize     = 16 << 20
	DefaultLeafSize = 256 << 10
)

// CheckLeafSize reports whether l is a usable leaf size: a power of two from
// 4 KiB to 16 MiB.
func CheckLeafSize(l uint64) error {
	if l < MinLeafSize || l > MaxLeafSize || l&(l-1) != 0 {
		return fmt.Errorf("leaf size %d: must be a power of two from %d to %d", l, MinLeafSize, MaxLeafSize)
	}
	return nil
}

// LeafCount returns the number of leaves of an n-byte shard: ⌈n/L⌉.
func LeafCount(n, leafSize uint64) uint64 {
	return (n + leafSize - 1) / leafSize
}

// LeafHash is the SHA-256 of one leaf.
type LeafHash = [sha256.Size]byte

// TreeRoot computes the sha256-tree-v1 root over the leaf hashes of an n-byte
// shard cut in leafSize leaves:
//
//	SHA-256("sha256-tree-v1" || 0x00 || uint64_be(n) || uint64_be(L) || leaf_0 || … || leaf_k)
func TreeRoot(n, leafSize uint64, leaves []LeafHash) [sha256.Size]byte {
	h := sha256.New()
	var hdr [len(DigestScheme) + 1 + 16]byte
	copy(hdr[:], DigestScheme)
	binary.BigEndian.PutUint64(hdr[len(DigestScheme)+1:], n)
	binary.BigEndian.PutUint64(hdr[len(DigestScheme)+9:], leafSize)
	h.Write(hdr[:])
	for i := range leaves {
		h.Write(leaves[i][:])
	}
	var out [sha256.Size]byte
	h.Sum(out[:0])
	return out
}

// FormatDigest writes a root as "sha256-tree-v1:<64 lower-case hex>".
func FormatDigest(root [sha256.Size]byte) string {
	return DigestScheme + ":" + hex.EncodeToString(root[:])
}

// ParseDigest parses "sha256-tree-v1:<64 lower-case hex>".
func ParseDigest(s string) ([sha256.Size]byte, error) {
	var out [sha256.Size]byte
	rest, ok := strings.CutPrefix(s, DigestScheme+":")
	if !ok {
		return out, fmt.Errorf("digest %q: want %s:<64 hex digits>", s, DigestScheme)
	}
	if err := checkHex64(rest); err != nil {
		return out, fmt.Errorf("digest %q: %w", s, err)
	}
	_, _ = hex.Decode(out[:], []byte(rest))
	return out, nil
}

// checkHex64 accepts exactly 64 lower-case hex digits.
func checkHex64(s string) error {
	if len(s) != 64 {
		return fmt.Errorf("want 64 hex digits, got %d characters", len(s))
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("character %d is not a lower-case hex digit", i)
		}
	}
	return nil
}

// ParseSHA256Hex parses a plain SHA-256 in hex (upper case accepted and
// lowered), as given with --sha256 or in a manifest.
func ParseSHA256Hex(s string) (string, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	if err := checkHex64(l); err != nil {
		return "", fmt.Errorf("sha256 %q: %w", s, err)
	}
	return l, nil
}

// Digests is what hashing a whole shard yields.
type Digests struct {
	Size          uint64
	LeafSize      uint64
	ContentSHA256 string // plain sha256 hex of the bytes
	Digest        string // sha256-tree-v1:<hex>
	Leaves        []LeafHash
}

// DigestReader reads r to its end and returns its content SHA-256 and tree
// digest, computed in one pass: the content hash runs on one goroutine while
// the leaves are hashed on others. It reads in bounded buffers; the whole
// stream is never held in memory. An empty stream is an error.
func DigestReader(r io.Reader, leafSize uint64) (Digests, error) {
	th, err := newTreeHasher(leafSize, nil)
	if err != nil {
		return Digests{}, err
	}
	defer th.stop() // a no-op once finish ran
	for {
		buf, err := th.buffer(context.Background())
		if err != nil {
			return Digests{}, err
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			th.submit(buf[:n])
		} else {
			th.put(buf)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return Digests{}, err
		}
	}
	return th.finish()
}

// treeHasher hashes a stream, in order, into the content SHA-256 and the
// tree leaves. Buffers handed to submit are multiples of the leaf size except
// the last one; the content hash and the leaf hashes run concurrently.
type treeHasher struct {
	leafSize uint64
	src      bufferSource
	slots    chan struct{} // one per buffer this stream holds
	inFlight sync.WaitGroup

	content hash.Hash
	contCh  chan job
	leafCh  chan job
	wg      sync.WaitGroup

	mu      sync.Mutex
	leaves  []LeafHash
	n       uint64
	nextOff uint64
	closed  bool
}

type job struct {
	off  uint64
	data []byte
	done *sync.WaitGroup // released when both hashers are through with data
}

// streamBuffer is the size of one read buffer when streaming a shard; it is
// raised to the leaf size when leaves are larger.
const streamBuffer = 4 << 20

// streamBuffers is the most buffers one stream has in flight.
const streamBuffers = 4

// newTreeHasher returns a hasher taking its buffers from pool (from a
// small pool of its own when pool is nil or leaves are larger than its
// buffers). It holds at most streamBuffers at once, takes each as it reads
// and gives it back as soon as it is hashed, so a small file holds one
// buffer and, under a spent budget, the waiting verifications and seals
// take turns.
func newTreeHasher(leafSize uint64, pool *BufferPool) (*treeHasher, error) {
	if err := CheckLeafSize(leafSize); err != nil {
		return nil, err
	}
	var src bufferSource = newLocalBuffers(max(uint64(streamBuffer), leafSize), streamBuffers)
	if pool != nil && leafSize <= BufferSize {
		src = pool
	}
	size := src.size()
	th := &treeHasher{
		leafSize: leafSize,
		src:      src,
		slots:    make(chan struct{}, streamBuffers),
		content:  sha256.New(),
		contCh:   make(chan job, streamBuffers),
		leafCh:   make(chan job, streamBuffers*int(size/leafSize)),
	}
	th.wg.Add(1)
	go func() {
		defer th.wg.Done()
		for j := range th.contCh {
			th.content.Write(j.data)
			j.done.Done()
		}
	}()
	workers := max(1, runtime.GOMAXPROCS(0)-1)
	for range workers {
		th.wg.Add(1)
		go func() {
			defer th.wg.Done()
			for j := range th.leafCh {
				sum := sha256.Sum256(j.data)
				th.mu.Lock()
				th.leaves[j.off/th.leafSize] = sum
				th.mu.Unlock()
				j.done.Done()
			}
		}()
	}
	return th, nil
}

// buffer takes a buffer, waiting while the stream holds streamBuffers or
// the source has none free, until ctx ends.
func (th *treeHasher) buffer(ctx context.Context) ([]byte, error) {
	select {
	case th.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	b, err := th.src.get(ctx)
	if err != nil {
		<-th.slots
		return nil, err
	}
	return b, nil
}

// put gives an unused buffer back.
func (th *treeHasher) put(b []byte) {
	th.src.put(b[:cap(b)])
	<-th.slots
}

// submit hashes data, the next bytes of the stream; data must come from
// buffer, and its length must be a multiple of the leaf size unless it is the
// last submission. The buffer returns to the pool when both hashers are done.
func (th *treeHasher) submit(data []byte) {
	off := th.nextOff
	th.nextOff += uint64(len(data))
	nLeaves := LeafCount(uint64(len(data)), th.leafSize)
	th.mu.Lock()
	for range nLeaves {
		th.leaves = append(th.leaves, LeafHash{})
	}
	th.n += uint64(len(data))
	th.mu.Unlock()

	done := &sync.WaitGroup{}
	done.Add(1 + int(nLeaves))
	th.contCh <- job{data: data, done: done}
	for i := uint64(0); i < nLeaves; i++ {
		lo := i * th.leafSize
		hi := min(lo+th.leafSize, uint64(len(data)))
		th.leafCh <- job{off: off + lo, data: data[lo:hi], done: done}
	}
	th.inFlight.Add(1)
	go func() {
		defer th.inFlight.Done()
		done.Wait()
		th.put(data)
	}()
}

// finish waits for every submitted byte and returns the digests.
func (th *treeHasher) finish() (Digests, error) {
	th.stop()
	if th.n == 0 {
		return Digests{}, ErrEmpty
	}
	root := TreeRoot(th.n, th.leafSize, th.leaves)
	return Digests{
		Size:          th.n,
		LeafSize:      th.leafSize,
		ContentSHA256: hex.EncodeToString(th.content.Sum(nil)),
		Digest:        FormatDigest(root),
		Leaves:        th.leaves,
	}, nil
}

func (th *treeHasher) stop() {
	if th.closed {
		return
	}
	th.closed = true
	close(th.contCh)
	close(th.leafCh)
	th.wg.Wait()
	th.inFlight.Wait()
}

// HashLeaves hashes data (a whole shard held in memory) into its leaves, in
// parallel across workers goroutines (GOMAXPROCS when workers < 1).
func HashLeaves(data []byte, leafSize uint64, workers int) []LeafHash {
	n := uint64(len(data))
	leaves := make([]LeafHash, LeafCount(n, leafSize))
	parallelLeaves(len(leaves), workers, func(i int) {
		lo := uint64(i) * leafSize
		leaves[i] = sha256.Sum256(data[lo:min(lo+leafSize, n)])
	})
	return leaves
}

// parallelLeaves calls fn(i) for every i in [0, count) on workers
// goroutines, handing out contiguous runs of indices.
func parallelLeaves(count, workers int, fn func(i int)) {
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	workers = min(workers, count)
	if workers <= 1 {
		for i := range count {
			fn(i)
		}
		return
	}
	var next sync.Mutex
	cursor := 0
	const run = 8
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				next.Lock()
				lo := cursor
				cursor += run
				next.Unlock()
				if lo >= count {
					return
				}
				for i := lo; i < min(lo+run, count); i++ {
					fn(i)
				}
			}
		}()
	}
	wg.Wait()
}
