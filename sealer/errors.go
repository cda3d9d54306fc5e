package sealer

import (
	"errors"
	"fmt"
)

// Kind classifies an operation's failure for callers (the control API maps
// kinds to HTTP statuses and exit codes).
type Kind int

const (
	// KindInvalid: bad input (id, leaf size, file, seal record format).
	KindInvalid Kind = iota + 1
	// KindNotFound: no shard with that id.
	KindNotFound
	// KindExists: a shard with that id is already sealed (or being sealed).
	KindExists
	// KindInsufficientVRAM: not enough free VRAM on that GPU now.
	KindInsufficientVRAM
	// KindDevice: the device failed (allocation, copy or read error).
	KindDevice
	// KindIntegrity: a verification failed (digest or signature mismatch,
	// allocation missing), or the file's content digest was not the expected one.
	KindIntegrity
	// KindPolicy: the VRAM-only policy blocks that GPU.
	KindPolicy
	// KindCancelled: the operation was cut short (shard released, shutdown).
	KindCancelled
	// KindBusy: the shard is held by consumers (a release without force).
	KindBusy
)

func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid"
	case KindNotFound:
		return "not_found"
	case KindExists:
		return "exists"
	case KindInsufficientVRAM:
		return "insufficient_vram"
	case KindDevice:
		return "device_error"
	case KindIntegrity:
		return "integrity"
	case KindPolicy:
		return "policy_blocked"
	case KindCancelled:
		return "cancelled"
	case KindBusy:
		return "busy"
	}
	return "unknown"
}

// Error is the error every Sealer operation returns. Its message names the
// operation and the shard and never contains VRAM addresses or key material.
type Error struct {
	Op      string // "seal", "verify", "release"
	ShardID string
	Kind    Kind
	Err     error
}

func (e *Error) Error() string {
	if e.ShardID != "" {
		return fmt.Sprintf("%s %s: %v", e.Op, e.ShardID, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.Op, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Retryable tells whether the same call may succeed later without a change
// by the caller: insufficient VRAM or a device error may clear, a failed
// verification or bad input will not.
func (e *Error) Retryable() bool {
	return e.Kind == KindInsufficientVRAM || e.Kind == KindDevice
}

// KindOf returns err's Kind, or 0 when err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// IsRetryable tells whether err is an *Error that may clear on its own.
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable()
}

// Errors the devices and the sealer wrap.
var (
	// ErrEmpty: a shard has no bytes.
	ErrEmpty = errors.New("shard is empty (0 bytes)")
	// ErrOutOfMemory: a device has too little free memory for an allocation.
	ErrOutOfMemory = errors.New("out of device memory")
	// ErrAllocationMissing: the device no longer holds the allocation
	// (freed behind the agent's back, device reset).
	ErrAllocationMissing = errors.New("allocation missing on the device")
	// ErrDeviceLost: the device is gone (fell off the bus, driver reset).
	ErrDeviceLost = errors.New("device lost")
	// ErrNoDevice: no device with that index.
	ErrNoDevice = errors.New("no such device")
)

func opErr(op, id string, k Kind, err error) *Error {
	return &Error{Op: op, ShardID: id, Kind: k, Err: err}
}
