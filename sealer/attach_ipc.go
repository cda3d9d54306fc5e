package sealer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// IPCHandleSize is the size of a legacy CUDA IPC memory handle
// (CUipcMemHandle).
const IPCHandleSize = 64

// IPCAdopter is implemented by devices that can attach memory another
// process exported as a legacy CUDA IPC handle (cuIpcGetMemHandle; what
// PyTorch exports for a storage): the handle names a whole allocator
// segment, of which size bytes at offset are sealed. A handle can be opened
// only once per process, so the device opens each one once and counts its
// attachments; Free drops one, and the last closes the handle, never the
// owner's memory.
type IPCAdopter interface {
	AdoptIPC(ctx context.Context, handle [IPCHandleSize]byte, offset, size uint64) (Allocation, error)
}

// ParseIPCHandle parses a legacy CUDA IPC handle written as 128 hex digits
// (either case).
func ParseIPCHandle(s string) ([IPCHandleSize]byte, error) {
	var h [IPCHandleSize]byte
	if len(s) != 2*IPCHandleSize {
		return h, fmt.Errorf("a CUDA IPC handle is %d hex digits, not %d", 2*IPCHandleSize, len(s))
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("a CUDA IPC handle is %d hex digits: %w", 2*IPCHandleSize, err)
	}
	return h, nil
}

// CheckGPUUUID checks a GPU UUID as nvidia-smi prints it: "GPU-" or
// "MIG-" and 32 hex digits in groups of 8-4-4-4-12.
func CheckGPUUUID(s string) error {
	bad := fmt.Errorf("%q is not a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", s)
	rest, ok := strings.CutPrefix(s, "GPU-")
	if !ok {
		if rest, ok = strings.CutPrefix(s, "MIG-"); !ok {
			return bad
		}
	}
	groups := strings.Split(rest, "-")
	want := []int{8, 4, 4, 4, 12}
	if len(groups) != len(want) {
		return bad
	}
	for i, g := range groups {
		if len(g) != want[i] {
			return bad
		}
		for _, c := range g {
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return bad
			}
		}
	}
	return nil
}

// deviceByUUID finds the GPU with the given UUID among the sealer's devices
// (GPUDescriber): an engine's CUDA ordinals need not be the agent's.
func (s *Sealer) deviceByUUID(ctx context.Context, uuid string) (int, error) {
	if err := CheckGPUUUID(uuid); err != nil {
		return 0, err
	}
	for i, d := range s.devices {
		gd, ok := d.(GPUDescriber)
		if !ok {
			continue
		}
		p, err := gd.Properties(ctx)
		if err == nil && p.UUID == uuid {
			return i, nil
		}
	}
	return 0, fmt.Errorf("no GPU %s on this agent", uuid)
}

// adopt takes the attached memory the request names: a descriptor
// (Adopter), or a legacy CUDA IPC handle (IPCAdopter), which works only
// between processes of one pid namespace: the owner's pid must be known.
func adopt(ctx context.Context, dev Device, req AttachRequest) (Allocation, error) {
	if req.IPCHandle == nil {
		adopter, ok := dev.(Adopter)
		if !ok {
			return nil, errNoAttach(req.GPU, "memory of another process")
		}
		return adopter.Adopt(ctx, req.Memory, req.Size)
	}
	ipc, ok := dev.(IPCAdopter)
	if !ok {
		return nil, errNoAttach(req.GPU, "a CUDA IPC handle")
	}
	if req.Owner.PID <= 0 {
		return nil, errIPCNamespace
	}
	return ipc.AdoptIPC(ctx, *req.IPCHandle, req.Offset, req.Size)
}

// errNoAttach is the refusal of a device that cannot attach that memory.
func errNoAttach(gpu int, what string) error { return fmt.Errorf("GPU %d cannot attach %s", gpu, what) }

// errIPCNamespace refuses a legacy CUDA IPC handle from an owner whose pid
// the agent cannot see.
var errIPCNamespace = errors.New("legacy CUDA IPC works only between processes in one pid namespace, and the engine's pid is not visible to the agent: " +
	"run the agent in the engine's pid namespace (hostPID on Kubernetes), or attach a VMM descriptor (cuMemExportToShareableHandle) instead")
