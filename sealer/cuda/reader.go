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
// One reader process per GPU imports the GPU's attachments and answers
// reads of them over a socket pair: a sticky error ends that process (and
// faults the attachments it held), never the agent's own context. It runs
// while it holds attachments; a later attachment starts a new one.

// readerEnv carries a reader process's readerConfig (JSON).
const readerEnv = "VRAMSEAL_CUDA_READER"

// readerChunk bounds one read request.
const readerChunk = 8 << 20

// readerStartTimeout bounds a reader process's start (loading the driver,
// opening the GPU).
const readerStartTimeout = time.Minute

type readerConfig struct {
	Library string `json:"library"`
	Ordinal int    `json:"ordinal"`
}

// Answers: ok, failed, or failed with a sticky error (the reader then exits).
const (
	readerOK     = 0
	readerFailed = 1
	readerSticky = 2
)

// Requests (a 29-byte header: op, id, off, n): attach a VMM descriptor
// (carried with SCM_RIGHTS; n is the size), attach an IPC handle (64 bytes
// follow; off and n are the range), read, report the memory's type, free.
const (
	opAttachVMM = 'v'
	opAttachIPC = 'i'
	opRead      = 'r'
	opMemory    = 'm'
	opFree      = 'f'
	headerBytes = 1 + 4 + 8 + 8 + 8
)

// IsReader reports whether this process was started as a reader of
// attached memory (Options.ReaderCommand): its main calls ServeReader and
// exits.
func IsReader() bool { return os.Getenv(readerEnv) != "" }

// ServeReader is a reader process's main: it opens the GPU its parent
// names, then attaches, reads and frees attachments as the parent asks on
// descriptor 3, until the parent closes it; it returns the exit status.
func ServeReader() int {
	ctx := context.Background()
	f := os.NewFile(3, "vramseal-reader")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return 1
	}
	conn := c.(*net.UnixConn)
	defer conn.Close()
	answer := func(status byte, payload []byte) error {
		var head [5]byte
		head[0] = status
		binary.BigEndian.PutUint32(head[1:], uint32(len(payload)))
		_, err := conn.Write(append(head[:], payload...))
		return err
	}
	// report answers an operation's error; a sticky one ends the process.
	report := func(err error) bool {
		var fault *AttachedFault
		if errors.As(err, &fault) {
			_ = answer(readerSticky, []byte(err.Error()))
			return false
		}
		return answer(readerFailed, []byte(err.Error())) == nil
	}
	var cfg readerConfig
	if err := json.Unmarshal([]byte(os.Getenv(readerEnv)), &cfg); err != nil {
		_ = answer(readerFailed, []byte(err.Error()))
		return 1
	}
	devs, err := Open(ctx, Options{LibraryPath: cfg.Library, Devices: []int{cfg.Ordinal}, Workers: 1, VerifyInFlight: 1})
	if err != nil {
		_ = answer(readerFailed, []byte(err.Error()))
		return 1
	}
	d := devs[0]
	defer d.Close() // frees every attachment still held
	if answer(readerOK, nil) != nil {
		return 1
	}
	held := map[uint32]sealer.Allocation{}
	var next uint32
	buf := make([]byte, readerChunk)
	for {
		var head [headerBytes]byte
		fds, err := readWithRights(conn, head[:])
		if err != nil {
			return 0 // the parent let go
		}
		op, id := head[0], binary.BigEndian.Uint32(head[1:])
		off, n := binary.BigEndian.Uint64(head[5:]), binary.BigEndian.Uint64(head[13:])
		var a sealer.Allocation
		if op == opRead || op == opMemory || op == opFree {
			if a = held[id]; a == nil {
				if !report(fmt.Errorf("reader: no attachment %d", id)) {
					return 1
				}
				continue
			}
		}
		var payload []byte
		switch op {
		case opAttachVMM:
			if len(fds) != 1 {
				err = fmt.Errorf("reader: attach carries one descriptor, not %d", len(fds))
				break
			}
			a, err = d.Adopt(ctx, fds[0], n)
		case opAttachIPC:
			var h [sealer.IPCHandleSize]byte
			if _, err = io.ReadFull(conn, h[:]); err == nil {
				a, err = d.AdoptIPC(ctx, h, off, n)
			}
		case opRead:
			if n > readerChunk {
				err = fmt.Errorf("reader: a read of %d bytes, at most %d", n, readerChunk)
				break
			}
			err = d.Read(ctx, a, off, buf[:n])
			payload = buf[:n]
		case opMemory:
			var m sealer.AllocationMemory
			if m, err = d.AllocationMemory(ctx, a); err == nil {
				payload, _ = json.Marshal(m)
			}
		case opFree:
			delete(held, id)
			err = d.Free(ctx, a)
		default:
			err = fmt.Errorf("reader: unknown request %q", op)
		}
		for _, f := range fds {
			f.Close()
		}
		if err != nil {
			if !report(err) {
				return 1
			}
			continue
		}
		if op == opAttachVMM || op == opAttachIPC {
			next++
			held[next] = a
			payload = binary.BigEndian.AppendUint32(nil, next)
		}
		if answer(readerOK, payload) != nil {
			return 1
		}
	}
}

// readWithRights fills p from c, collecting descriptors sent with it.
func readWithRights(c *net.UnixConn, p []byte) ([]*os.File, error) {
	var files []*os.File
	oob := make([]byte, unix.CmsgSpace(4))
	for got := 0; got < len(p); {
		n, oobn, _, _, err := c.ReadMsgUnix(p[got:], oob)
		if oobn > 0 {
			if msgs, perr := unix.ParseSocketControlMessage(oob[:oobn]); perr == nil {
				for _, m := range msgs {
					fds, _ := unix.ParseUnixRights(&m)
					for _, fd := range fds {
						files = append(files, os.NewFile(uintptr(fd), "attached"))
					}
				}
			}
		}
		if err != nil || n == 0 {
			for _, f := range files {
				f.Close()
			}
			return nil, errors.Join(err, io.ErrUnexpectedEOF)
		}
		got += n
	}
	return files, nil
}

// reader is the agent's side of a reader process.
type reader struct {
	mu   sync.Mutex
	cmd  *exec.Cmd
	conn *net.UnixConn
	// dead is why the reader can serve no more (it exited, or hit a
	// sticky error); guarded by mu.
	dead error
	// held counts the attachments using it; guarded by Device.readerMu.
	held int
}

// remote is an attachment held by a reader process.
type remote struct {
	d  *Device
	r  *reader
	id uint32
}

// startReader starts a reader process for the device and waits until it
// has opened the GPU.
func (d *Device) startReader(ctx context.Context) (*reader, error) {
	raw, err := json.Marshal(readerConfig{Library: d.Library(), Ordinal: int(d.ordinal)})
	if err != nil {
		return nil, err
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "reader"), os.NewFile(uintptr(fds[1]), "reader")
	defer theirs.Close()
	c, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(d.readerCmd[0], d.readerCmd[1:]...)
	cmd.Env = append(os.Environ(), readerEnv+"="+string(raw))
	cmd.ExtraFiles = []*os.File{theirs}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		c.Close()
		return nil, fmt.Errorf("starting the reader process of attached memory: %w", err)
	}
	r := &reader{cmd: cmd, conn: c.(*net.UnixConn)}
	// A reader that cannot open the GPU in a minute is not waited for.
	ctx, cancel := context.WithTimeout(ctx, readerStartTimeout)
	defer cancel()
	if _, err := r.answer(ctx); err != nil {
		_ = cmd.Process.Kill() // it may be stuck in the driver
		r.close()
		return nil, err
	}
	return r, nil
}

// sharedReader returns the device's reader process, counting one more
// attachment on it (unuse gives it back), and starts one when there is none
// or the last one died.
func (d *Device) sharedReader(ctx context.Context) (*reader, error) {
	d.readerMu.Lock()
	defer d.readerMu.Unlock()
	if d.rd != nil && d.rd.alive() {
		d.rd.held++
		return d.rd, nil
	}
	if d.rd != nil {
		_ = d.rd.close()
	}
	r, err := d.startReader(ctx)
	if err != nil {
		return nil, err
	}
	d.rd, r.held = r, 1
	return r, nil
}

// unuse gives back one attachment's use of r; the reader ends with its
// last attachment.
func (d *Device) unuse(r *reader) error {
	d.readerMu.Lock()
	defer d.readerMu.Unlock()
	if r.held--; r.held > 0 {
		return nil
	}
	if d.rd == r {
		d.rd = nil
	}
	return r.close()
}

// closeReader ends the device's reader process, at Close.
func (d *Device) closeReader() error {
	d.readerMu.Lock()
	defer d.readerMu.Unlock()
	if d.rd == nil {
		return nil
	}
	err := d.rd.close()
	d.rd = nil
	return err
}

// attachRemote attaches memory in the device's reader process: a VMM
// descriptor (mem), or an IPC handle's range.
func (d *Device) attachRemote(ctx context.Context, mem *os.File, ipc *[sealer.IPCHandleSize]byte, off, size uint64) (*allocation, error) {
	r, err := d.sharedReader(ctx)
	if err != nil {
		return nil, err
	}
	var payload []byte
	if mem != nil {
		payload, err = r.call(ctx, opAttachVMM, 0, 0, size, nil, mem)
	} else {
		payload, err = r.call(ctx, opAttachIPC, 0, off, size, ipc[:], nil)
	}
	if err == nil && len(payload) != 4 {
		err = errors.New("the reader process of attached memory answered no attachment id")
	}
	if err != nil {
		return nil, errors.Join(err, d.unuse(r))
	}
	return d.track(&allocation{dev: d, size: size, attached: true, remote: &remote{d: d, r: r, id: binary.BigEndian.Uint32(payload)}}), nil
}

func (r *reader) alive() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dead == nil
}

// answer reads the reader's next answer: its payload, or its error (an
// AttachedFault for a sticky one). Call with r.mu held, or before r is
// shared.
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
		return nil, r.die(&AttachedFault{Err: &CallError{Func: "the reader process of attached memory (it exited)", Result: ResultUnknown}})
	}
	payload := make([]byte, binary.BigEndian.Uint32(head[1:]))
	if _, err := io.ReadFull(r.conn, payload); err != nil {
		return nil, r.die(fmt.Errorf("the reader process of attached memory: %w", err))
	}
	switch head[0] {
	case readerOK:
		return payload, nil
	case readerSticky:
		return nil, r.die(&AttachedFault{Err: &CallError{Func: "the reader process of attached memory: " + string(payload), Result: ResultIllegalAddress}})
	}
	return nil, errors.New(string(payload))
}

// die records why the reader serves no more and returns err.
func (r *reader) die(err error) error {
	if r.dead == nil {
		r.dead = err
	}
	return err
}

// call sends one request (extra bytes after the header, a descriptor with
// it) and returns the answer's payload.
func (r *reader) call(ctx context.Context, op byte, id uint32, off, n uint64, extra []byte, fd *os.File) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dead != nil {
		return nil, r.dead
	}
	head := make([]byte, headerBytes, headerBytes+len(extra))
	head[0] = op
	binary.BigEndian.PutUint32(head[1:], id)
	binary.BigEndian.PutUint64(head[5:], off)
	binary.BigEndian.PutUint64(head[13:], n)
	var oob []byte
	if fd != nil {
		oob = unix.UnixRights(int(fd.Fd()))
	}
	if _, _, err := r.conn.WriteMsgUnix(append(head, extra...), oob, nil); err != nil {
		return nil, r.die(&AttachedFault{Err: &CallError{Func: "the reader process of attached memory (it exited)", Result: ResultUnknown}})
	}
	return r.answer(ctx)
}

// read copies len(p) bytes of an attachment at off into p.
func (m *remote) read(ctx context.Context, off uint64, p []byte) error {
	for len(p) > 0 {
		n := min(len(p), readerChunk)
		got, err := m.r.call(ctx, opRead, m.id, off, uint64(n), nil, nil)
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
func (m *remote) memory(ctx context.Context) (sealer.AllocationMemory, error) {
	raw, err := m.r.call(ctx, opMemory, m.id, 0, 0, nil, nil)
	if err != nil {
		return sealer.AllocationMemory{}, err
	}
	var am sealer.AllocationMemory
	return am, json.Unmarshal(raw, &am)
}

// free has the reader drop the attachment; a reader that died already
// dropped it with everything else.
func (m *remote) free(ctx context.Context) error {
	_, err := m.r.call(ctx, opFree, m.id, 0, 0, nil, nil)
	var fault *AttachedFault
	if errors.As(err, &fault) {
		err = nil
	}
	return errors.Join(err, m.d.unuse(m.r))
}

// close ends the reader process: it frees what it holds and exits.
func (r *reader) close() error {
	r.conn.Close() // first: a call waiting for an answer ends
	r.mu.Lock()
	r.die(errors.New("the reader process of attached memory was closed"))
	r.mu.Unlock()
	err := r.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // it reported its failure already
	}
	return err
}

// leavesOnHost hashes an attachment read through the reader process, for
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
