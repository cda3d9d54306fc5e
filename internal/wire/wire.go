// Package wire is the consumer socket's protocol, version 1
// (docs/consumers.md): frames of a 4-byte big-endian length and one JSON
// message, with file descriptors attached (SCM_RIGHTS) to the frame that
// carries them. Frames are read with recvmsg and never buffered past their
// end, because the kernel attaches a descriptor to a byte of the stream: a
// buffered reader that took that byte would drop the descriptor silently.
package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Version is the protocol version every message carries.
const Version = 1

// MaxFrame bounds a frame's JSON message.
const MaxFrame = 64 << 10

// MaxFiles bounds the descriptors one frame carries.
const MaxFiles = 4

// Operations.
const (
	OpOpen   = "open"   // lease a sealed shard: the answer carries its descriptor
	OpClose  = "close"  // end this connection's lease on a shard
	OpVerify = "verify" // verify a presented seal record (verify-before-use)
	OpAttach = "attach" // seal memory the consumer owns, in place: the request carries its descriptor
	OpDetach = "detach" // end an attachment before freeing or changing the memory
)

// Request is what a consumer sends.
type Request struct {
	V  int    `json:"v"`
	Op string `json:"op"`
	// ID names the shard (open, close).
	ID string `json:"id,omitempty"`
	// Seal is a seal record as the agent signed it (verify).
	Seal json.RawMessage `json:"seal,omitempty"`
	// GPU, Size, ModelRef and SHA256 describe memory to attach (attach).
	GPU      int    `json:"gpu,omitempty"`
	Size     uint64 `json:"size,omitempty"`
	ModelRef string `json:"model_ref,omitempty"`
	SHA256   string `json:"sha256,omitempty"`
	// Files is the number of descriptors attached to this frame (attach: 1).
	Files int `json:"files,omitempty"`
	// IPCHandle (128 hex digits), instead of a descriptor, is a legacy
	// CUDA IPC handle of the owner's allocator segment, and Offset where
	// the bytes to seal start in it (attach).
	IPCHandle string `json:"ipc_handle,omitempty"`
	Offset    uint64 `json:"offset,omitempty"`
	// GPUUUID names the GPU instead of GPU (attach).
	GPUUUID string `json:"gpu_uuid,omitempty"`
}

// Response is the agent's answer to one request.
type Response struct {
	V  int  `json:"v"`
	OK bool `json:"ok"`
	// Error says why a request failed (OK false).
	Error *Error `json:"error,omitempty"`
	// Seal is the shard's signed seal record (open).
	Seal json.RawMessage `json:"seal,omitempty"`
	// Size is the shard's size in bytes (open).
	Size uint64 `json:"size,omitempty"`
	// Memory says what the descriptor is: "memfd" (simulated GPU) or
	// "cuda_vmm" (a CUDA VMM allocation) (open).
	Memory string `json:"memory,omitempty"`
	// MappedSize and GPUUUID, for "cuda_vmm": the allocation's size (what
	// the consumer reserves and maps: the shard's size rounded up to the
	// granularity) and the GPU it is on (open).
	MappedSize uint64 `json:"mapped_size,omitempty"`
	GPUUUID    string `json:"gpu_uuid,omitempty"`
	// Files is the number of descriptors attached to this frame.
	Files int `json:"files,omitempty"`
	// Result is a verification's outcome (verify).
	Result json.RawMessage `json:"result,omitempty"`
}

// Error is a refusal or failure.
type Error struct {
	// Kind classifies it: invalid, not_found, forbidden, busy,
	// integrity, device_error, cancelled, version, too_many, internal.
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Kind + ": " + e.Message }

// Error kinds of the protocol itself (the sealer's kinds are used as they are).
const (
	KindInvalid   = "invalid"
	KindVersion   = "version"
	KindForbidden = "forbidden"
	KindTooMany   = "too_many"
	KindInternal  = "internal"
)

// ErrFrame is wrapped by ReadFrame's errors for a malformed frame (bad
// length, bad JSON, unexpected descriptors): the connection cannot be
// trusted past it.
var ErrFrame = errors.New("malformed frame")

// Write sends msg as one frame on c, with files attached.
func Write(c *net.UnixConn, msg any, files ...*os.File) error {
	if len(files) > MaxFiles {
		return fmt.Errorf("wire: %d descriptors in one frame, at most %d", len(files), MaxFiles)
	}
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	if len(body) > MaxFrame {
		return fmt.Errorf("wire: a %d-byte message, at most %d", len(body), MaxFrame)
	}
	buf := make([]byte, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(buf, oob, nil)
	if err != nil {
		return fmt.Errorf("wire: %w", err)
	}
	if n < len(buf) { // the descriptors went with the first part
		if _, err := c.Write(buf[n:]); err != nil {
			return fmt.Errorf("wire: %w", err)
		}
	}
	if oobn != len(oob) {
		return fmt.Errorf("wire: %d of %d control bytes sent", oobn, len(oob))
	}
	return nil
}

// Read reads one frame from c into msg (unknown fields refused) and returns
// the descriptors that came with it. io.EOF means the peer closed the
// connection between frames.
func Read(c *net.UnixConn, msg any) ([]*os.File, error) {
	var files []*os.File
	fail := func(err error) ([]*os.File, error) {
		for _, f := range files {
			f.Close()
		}
		return nil, err
	}
	var head [4]byte
	got, err := readFull(c, head[:], &files)
	if err != nil {
		if got == 0 && errors.Is(err, io.EOF) {
			return fail(io.EOF)
		}
		return fail(fmt.Errorf("wire: reading a frame header: %w", err))
	}
	n := binary.BigEndian.Uint32(head[:])
	if n == 0 || n > MaxFrame {
		return fail(fmt.Errorf("wire: a frame of %d bytes, want 1 to %d: %w", n, MaxFrame, ErrFrame))
	}
	body := make([]byte, n)
	if _, err := readFull(c, body, &files); err != nil {
		return fail(fmt.Errorf("wire: reading a %d-byte frame: %w", n, err))
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(msg); err != nil {
		return fail(fmt.Errorf("wire: the frame is not a message of this protocol: %v: %w", err, ErrFrame))
	}
	if dec.More() {
		return fail(fmt.Errorf("wire: trailing data after the message: %w", ErrFrame))
	}
	return files, nil
}

// readFull fills p with recvmsg calls, collecting the descriptors that
// arrive on the way.
func readFull(c *net.UnixConn, p []byte, files *[]*os.File) (int, error) {
	oob := make([]byte, unix.CmsgSpace(MaxFiles*4))
	got := 0
	for got < len(p) {
		n, oobn, flags, _, err := c.ReadMsgUnix(p[got:], oob)
		if oobn > 0 {
			fs, perr := parseRights(oob[:oobn])
			*files = append(*files, fs...)
			if perr != nil {
				return got, perr
			}
		}
		if flags&unix.MSG_CTRUNC != 0 {
			return got, fmt.Errorf("more than %d descriptors in one frame: %w", MaxFiles, ErrFrame)
		}
		if len(*files) > MaxFiles {
			return got, fmt.Errorf("more than %d descriptors in one frame: %w", MaxFiles, ErrFrame)
		}
		got += n
		if err != nil {
			return got, err
		}
		if n == 0 {
			return got, io.ErrUnexpectedEOF
		}
	}
	return got, nil
}

func parseRights(oob []byte) ([]*os.File, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("control message: %v: %w", err, ErrFrame)
	}
	var out []*os.File
	for _, m := range msgs {
		if m.Header.Level != syscall.SOL_SOCKET || m.Header.Type != syscall.SCM_RIGHTS {
			continue
		}
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			return out, fmt.Errorf("descriptors: %v: %w", err, ErrFrame)
		}
		for _, fd := range fds {
			out = append(out, os.NewFile(uintptr(fd), "received"))
		}
	}
	return out, nil
}
