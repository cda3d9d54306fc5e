package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/internal/wire"
	"github.com/vramseal/vramseal/sealer"
)

// DefaultConsumerSocket is where the agent serves consumers when
// handoff.socket says so.
const DefaultConsumerSocket = "/run/vramseal/handoff.sock"

// Consumer is a connection to the agent's consumer socket
// (docs/consumers.md). The shards opened on it are leased to this process
// until each is closed or the connection is: while a lease lasts, the
// agent does not release the shard unless forced. Calls are serialised;
// it is safe for concurrent use.
type Consumer struct {
	mu sync.Mutex
	c  *net.UnixConn
}

// DialConsumer connects to the consumer socket. A socket nobody serves
// is an error wrapping ErrUnreachable.
func DialConsumer(ctx context.Context, socket string) (*Consumer, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("consumer socket %s: %w (%v)", socket, ErrUnreachable, err)
	}
	return &Consumer{c: c.(*net.UnixConn)}, nil
}

// Close ends the connection, and with it every lease it holds.
func (c *Consumer) Close() error { return c.c.Close() }

// call sends req and reads the answer with its descriptors, bounded by
// ctx's deadline.
func (c *Consumer) call(ctx context.Context, req wire.Request, send ...*os.File) (wire.Response, []*os.File, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.V = wire.Version
	dl, _ := ctx.Deadline()
	_ = c.c.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = c.c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req.Files = len(send)
	werr := wire.Write(c.c, req, send...)
	// Read even when the write failed: an agent that refuses a caller
	// answers at once and closes, and its answer says why.
	var resp wire.Response
	files, err := wire.Read(c.c, &resp)
	if err == nil && werr != nil && resp.OK {
		err = werr
	}
	if err != nil {
		if werr != nil {
			err = werr
		}
		if ctx.Err() != nil {
			return resp, nil, ctx.Err()
		}
		return resp, nil, fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	if !resp.OK {
		for _, f := range files {
			f.Close()
		}
		if resp.Error == nil {
			return resp, nil, &APIError{Kind: wire.KindInternal, Message: "the agent refused without saying why"}
		}
		return resp, nil, &APIError{Kind: resp.Error.Kind, Message: resp.Error.Message}
	}
	return resp, files, nil
}

// Lease is a sealed shard leased to this process.
type Lease struct {
	// Seal is the signed seal record the agent sent. Check it before
	// use: VerifySeal asks the agent, which knows the key.
	Seal sealer.Seal
	// Size is the shard's size in bytes.
	Size uint64
	// Memory is what File is: "memfd" on the simulated GPU (Map maps
	// it), "cuda_vmm" on CUDA (CUDA.Import imports it).
	Memory string
	// MappedSize and GPUUUID, for "cuda_vmm": the allocation's size to
	// map (Size rounded up to the driver's granularity) and the GPU it is
	// on.
	MappedSize uint64
	GPUUUID    string
	// File is the shard's memory. Map maps it; it stays the consumer's
	// after Close, for as long as it keeps it open or mapped.
	File *os.File

	c  *Consumer
	id string
}

// Open leases a sealed shard and receives its memory.
func (c *Consumer) Open(ctx context.Context, id string) (*Lease, error) {
	resp, files, err := c.call(ctx, wire.Request{Op: wire.OpOpen, ID: id})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", id, err)
	}
	if len(files) != 1 || resp.Files != 1 {
		for _, f := range files {
			f.Close()
		}
		return nil, fmt.Errorf("open %s: the answer carried %d descriptors, want 1", id, len(files))
	}
	seal, err := sealer.ParseSeal(resp.Seal)
	if err != nil {
		files[0].Close()
		return nil, fmt.Errorf("open %s: the seal record: %w", id, err)
	}
	if seal.ShardID != id || seal.VRAMBytes != resp.Size {
		files[0].Close()
		return nil, fmt.Errorf("open %s: the answer's seal is of shard %q, %d bytes (size %d)", id, seal.ShardID, seal.VRAMBytes, resp.Size)
	}
	return &Lease{Seal: seal, Size: resp.Size, Memory: resp.Memory, MappedSize: resp.MappedSize, GPUUUID: resp.GPUUUID,
		File: files[0], c: c, id: id}, nil
}

// ErrNotMappable is returned by Map for memory that is not a memfd (a
// CUDA handle is imported with the driver instead).
var ErrNotMappable = errors.New("this shard's memory is not mapped with mmap")

// Map maps the shard read-only (shared: the agent's verification reads the
// same pages), its page tables filled at once (MAP_POPULATE) rather than
// page by page on first touch. Unmap it with Unmap.
func (s *Lease) Map() ([]byte, error) {
	if s.Memory != sealer.MemoryMemfd {
		return nil, fmt.Errorf("%s: %w (%s)", s.id, ErrNotMappable, s.Memory)
	}
	if s.Size == 0 || s.Size > uint64(int(^uint(0)>>1)) {
		return nil, fmt.Errorf("%s: cannot map %d bytes", s.id, s.Size)
	}
	m, err := unix.Mmap(int(s.File.Fd()), 0, int(s.Size), unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", s.id, err)
	}
	return m, nil
}

// Unmap unmaps what Map returned.
func Unmap(m []byte) error { return unix.Munmap(m) }

// Close ends the lease and closes File. A mapping made with Map stays
// valid until it is unmapped.
func (s *Lease) Close(ctx context.Context) error {
	_, _, err := s.c.call(ctx, wire.Request{Op: wire.OpClose, ID: s.id})
	return errors.Join(err, s.File.Close())
}

// VerifySeal asks the agent whether a seal record it signed still holds
// for the shard in memory (verify-before-use): the agent checks the
// signature and every field, then verifies the shard now.
func (c *Consumer) VerifySeal(ctx context.Context, seal sealer.Seal) (sealer.VerifyResult, error) {
	raw, err := json.Marshal(seal)
	if err != nil {
		return sealer.VerifyResult{}, err
	}
	return c.VerifySealRecord(ctx, raw)
}

// VerifySealRecord is VerifySeal for a seal record as JSON.
func (c *Consumer) VerifySealRecord(ctx context.Context, record []byte) (sealer.VerifyResult, error) {
	resp, _, err := c.call(ctx, wire.Request{Op: wire.OpVerify, Seal: record})
	if err != nil {
		return sealer.VerifyResult{}, fmt.Errorf("verify: %w", err)
	}
	var res sealer.VerifyResult
	if err := json.Unmarshal(resp.Result, &res); err != nil {
		return sealer.VerifyResult{}, fmt.Errorf("verify: the answer: %w", err)
	}
	return res, nil
}

// AttachOptions describe memory to attach.
type AttachOptions struct {
	// GPU is the GPU the memory is on; GPUUUID, when set, names it
	// instead (CUDA: this process's ordinals need not be the agent's).
	GPU     int
	GPUUUID string
	// Size is the bytes to seal from offset 0 (the memory's size when 0).
	Size uint64
	// ModelRef is recorded in the seal; SHA256 (hex), when set, pins the
	// content: a mismatch refuses the attach.
	ModelRef, SHA256 string
}

// Attachment is memory this process owns, sealed in place by the agent and
// re-verified there until Detach or the end of the connection.
type Attachment struct {
	Seal sealer.Seal
	c    *Consumer
	id   string
}

// Attach asks the agent to seal memory this process owns, in place: on the
// simulated GPU a memfd created with MFD_ALLOW_SEALING and sealed with
// F_SEAL_SHRINK|F_SEAL_GROW. Keep the memory unchanged while attached; call
// Detach before freeing or changing it.
func (c *Consumer) Attach(ctx context.Context, id string, memory *os.File, o AttachOptions) (*Attachment, error) {
	size := o.Size
	if size == 0 {
		st, err := memory.Stat()
		if err != nil {
			return nil, fmt.Errorf("attach %s: %w", id, err)
		}
		size = uint64(st.Size())
	}
	return c.attach(ctx, wire.Request{Op: wire.OpAttach, ID: id, GPU: o.GPU, GPUUUID: o.GPUUUID, Size: size, ModelRef: o.ModelRef, SHA256: o.SHA256}, memory)
}

// AttachIPC asks the agent to seal, in place, size bytes at offset of an
// allocator segment this process exported as a legacy CUDA IPC handle
// (cuIpcGetMemHandle; PyTorch's storage._share_cuda_() gives the handle,
// the offset and the size), on the GPU with the UUID gpuUUID. Legacy IPC
// works only when the agent sees this process's pid (one pid namespace):
// otherwise the agent refuses, and a VMM descriptor (Attach) is the way.
func (c *Consumer) AttachIPC(ctx context.Context, id string, handle [sealer.IPCHandleSize]byte, gpuUUID string, offset, size uint64, o AttachOptions) (*Attachment, error) {
	return c.attach(ctx, wire.Request{Op: wire.OpAttach, ID: id, IPCHandle: hex.EncodeToString(handle[:]), GPUUUID: gpuUUID, Offset: offset,
		Size: size, ModelRef: o.ModelRef, SHA256: o.SHA256})
}

func (c *Consumer) attach(ctx context.Context, req wire.Request, memory ...*os.File) (*Attachment, error) {
	id := req.ID
	resp, files, err := c.call(ctx, req, memory...)
	for _, f := range files {
		f.Close()
	}
	if err != nil {
		return nil, fmt.Errorf("attach %s: %w", id, err)
	}
	seal, err := sealer.ParseSeal(resp.Seal)
	if err != nil {
		return nil, fmt.Errorf("attach %s: the seal record: %w", id, err)
	}
	return &Attachment{Seal: seal, c: c, id: id}, nil
}

// Detach ends the attachment: the agent stops verifying the memory, which
// is then the owner's to free or change.
func (a *Attachment) Detach(ctx context.Context) error {
	_, _, err := a.c.call(ctx, wire.Request{Op: wire.OpDetach, ID: a.id})
	if err != nil {
		return fmt.Errorf("detach %s: %w", a.id, err)
	}
	return nil
}
