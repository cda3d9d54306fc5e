package cuda

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vramseal/vramseal/sealer"
)

// Attached memory read in a process of its own (Options.ReaderCommand).
// NVIDIA documents the sticky errors (an illegal address, for one) as
// leaving the whole process's CUDA state unusable, so an attachment whose
// owner freed its memory could otherwise fail every shard of the agent.
// A reader process imports one attachment and answers reads of it over a
// socket; a sticky error ends that process only.

// readerEnv carries a reader process's readerConfig (JSON).
const readerEnv = "VRAMSEAL_CUDA_READER"

// readerChunk bounds one read request.
const readerChunk = 8 << 20

type readerConfig struct {
	Library   string `json:"library"`
	Ordinal   int    `json:"ordinal"`
	IPCHandle string `json:"ipc_handle,omitempty"`
	Offset    uint64 `json:"offset,omitempty"`
	Size      uint64 `json:"size"`
}

// Reader process answers: ok, failed, or failed with a sticky error (the
// process then exits).
const (
	readerOK     = 0
	readerFailed = 1
	readerSticky = 2
)

// Requests: read a range, or report the memory's type.
const (
	opRead   = 'r'
	opMemory = 'm'
)

// IsReader reports whether this process was started as an attached-memory
// reader (Options.ReaderCommand): its main calls ServeReader and exits.
func IsReader() bool { return os.Getenv(readerEnv) != "" }

// ServeReader is a reader process's main: it imports the attachment its
// parent names (descriptor 3 is the socket to the parent, 4 the VMM
// descriptor when there is one), answers reads until the parent closes the
// socket, and returns the exit status.
func ServeReader() int {
	ctx := context.Background()
	conn := os.NewFile(3, "vramseal-reader")
	defer conn.Close()
	answer := func(status byte, payload []byte) error {
		var head [5]byte
		head[0] = status
		binary.BigEndian.PutUint32(head[1:], uint32(len(payload)))
		_, err := conn.Write(append(head[:], payload...))
		return err
	}
	fail := func(err error) int {
		status := byte(readerFailed)
		var fault *AttachedFault
		if errors.As(err, &fault) {
			status = readerSticky
		}
		_ = answer(status, []byte(err.Error()))
		return 1
	}
	var cfg readerConfig
	if err := json.Unmarshal([]byte(os.Getenv(readerEnv)), &cfg); err != nil {
		return fail(fmt.Errorf("reader: %w", err))
	}
	devs, err := Open(ctx, Options{LibraryPath: cfg.Library, Devices: []int{cfg.Ordinal}, Workers: 1, VerifyInFlight: 1})
	if err != nil {
		return fail(err)
	}
	d := devs[0]
	defer d.Close()
	var a sealer.Allocation
	if cfg.IPCHandle != "" {
		h, perr := sealer.ParseIPCHandle(cfg.IPCHandle)
		if perr != nil {
			return fail(perr)
		}
		a, err = d.AdoptIPC(ctx, h, cfg.Offset, cfg.Size)
	} else {
		mem := os.NewFile(4, "attached")
		a, err = d.Adopt(ctx, mem, cfg.Size)
		mem.Close()
	}
	if err != nil {
		return fail(err)
	}
	defer d.Free(ctx, a)
	if err := answer(readerOK, nil); err != nil {
		return 1
	}
	buf := make([]byte, readerChunk)
	for {
		var req [17]byte
		if _, err := io.ReadFull(conn, req[:]); err != nil {
			return 0 // the parent let go of the attachment
		}
		off, n := binary.BigEndian.Uint64(req[1:]), binary.BigEndian.Uint64(req[9:])
		switch {
		case req[0] == opMemory:
			m, err := d.AllocationMemory(ctx, a)
			if err != nil {
				return fail(err)
			}
			raw, _ := json.Marshal(m)
			if answer(readerOK, raw) != nil {
				return 1
			}
		case req[0] == opRead && n <= readerChunk:
			if err := d.Read(ctx, a, off, buf[:n]); err != nil {
				return fail(err)
			}
			if answer(readerOK, buf[:n]) != nil {
				return 1
			}
		default:
			return fail(fmt.Errorf("reader: bad request %q of %d bytes", req[0], n))
		}
	}
}

// reader is the parent's side of a reader process.
type reader struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	conn net.Conn
}

// startReader starts a reader process for one attachment (mem is the VMM
// descriptor, nil for an IPC handle) and waits until it has imported it.
func (d *Device) startReader(ctx context.Context, cfg readerConfig, mem *os.File) (*reader, error) {
	cfg.Library, cfg.Ordinal = d.Library(), int(d.ordinal)
	raw, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "reader"), os.NewFile(uintptr(fds[1]), "reader")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.readerCmd[0], d.readerCmd[1:]...)
	cmd.Env = append(os.Environ(), readerEnv+"="+string(raw))
	cmd.ExtraFiles = []*os.File{theirs}
	if mem != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, mem)
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting the reader process of attached memory: %w", err)
	}
	r := &reader{cmd: cmd, conn: conn}
	if _, err := r.answer(ctx); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// answer reads the reader's next answer: its payload, or its error (an
// AttachedFault for a sticky one).
func (r *reader) answer(ctx context.Context) ([]byte, error) {
	dl, _ := ctx.Deadline()
	_ = r.conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { _ = r.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	var head [5]byte
	if _, err := io.ReadFull(r.conn, head[:]); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &AttachedFault{Err: &CallError{Func: "the reader process of attached memory (it exited)", Result: ResultUnknown}}
	}
	payload := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(r.conn, payload); err != nil {
		return nil, fmt.Errorf("the reader process of attached memory: %w", err)
	}
	switch head[0] {
	case readerOK:
		return payload, nil
	case readerSticky:
		return nil, &AttachedFault{Err: &CallError{Func: "the reader process of attached memory: " + string(payload), Result: ResultIllegalAddress}}
	}
	return nil, errors.New(string(payload))
}

// call sends one request and returns the answer's payload.
func (r *reader) call(ctx context.Context, op byte, off, n uint64) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var req [17]byte
	req[0] = op
	binary.BigEndian.PutUint64(req[1:], off)
	binary.BigEndian.PutUint64(req[9:], n)
	if _, err := r.conn.Write(req[:]); err != nil {
		return nil, &AttachedFault{Err: &CallError{Func: "the reader process of attached memory (it exited)", Result: ResultUnknown}}
	}
	return r.answer(ctx)
}

// read copies len(p) bytes at off into p.
func (r *reader) read(ctx context.Context, off uint64, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), readerChunk)
		got, err := r.call(ctx, opRead, off, uint64(n))
		if err != nil {
			return err
		}
		if len(got) != n {
			return fmt.Errorf("the reader process of attached memory answered %d bytes, want %d", len(got), n)
		}
		copy(p, got)
		p, off = p[n:], off+uint64(n)
	}
	return nil
}

// memory asks the reader what memory backs the attachment.
func (r *reader) memory(ctx context.Context) (sealer.AllocationMemory, error) {
	raw, err := r.call(ctx, opMemory, 0, 0)
	if err != nil {
		return sealer.AllocationMemory{}, err
	}
	var m sealer.AllocationMemory
	return m, json.Unmarshal(raw, &m)
}

// close ends the reader process: it frees its import and exits.
func (r *reader) close() error {
	r.conn.Close()
	err := r.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // it reported its failure already
	}
	return err
}

// leavesOnHost hashes an attachment read through its reader process, for
// LeafDigests and TreeDigests: the kernel cannot reach another process's
// import.
func (d *Device) leavesOnHost(ctx context.Context, al *allocation, n, leafSize uint64) ([]sealer.LeafHash, error) {
	chunk := max(leafSize, readerChunk/leafSize*leafSize)
	buf := make([]byte, min(chunk, n))
	leaves := make([]sealer.LeafHash, 0, sealer.LeafCount(n, leafSize))
	for off := uint64(0); off < n; {
		k := min(chunk, n-off)
		if err := al.remote.read(ctx, off, buf[:k]); err != nil {
			return nil, al.contain(err)
		}
		leaves = append(leaves, sealer.HashLeaves(buf[:k], leafSize, 1)...)
		off += k
	}
	return leaves, nil
}
