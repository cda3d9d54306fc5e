package sealer

import (
	"context"
	"os"
)

// Device is one GPU as the sealer needs it. The CUDA backend (sealer/cuda)
// and the simulated GPU (sealer/simgpu) implement it.
//
// Implementations must be safe for concurrent use; operations on different
// allocations never interfere. Errors wrap ErrOutOfMemory,
// ErrAllocationMissing or ErrDeviceLost where those apply, and never contain
// device addresses.
//
// Cancellation: a cancelled ctx stops an operation between the chunks it
// copies; an operation already handed to the driver completes first. A
// Write or Read cut short returns ctx's error and leaves the allocation's
// bytes in part written, in part not (the sealer then frees it); p is not
// used after the call returns. Free ignores cancellation: memory is always
// given back.
//
// Lifetime: a backend whose devices are closed (sealer/cuda's Close) fails
// every later call with an error, never a crash; allocations live no
// longer than their device. The simulated GPU has nothing to close.
type Device interface {
	// Index is the device's index (the `gpu` label, gpu_device field).
	Index() int
	// MemoryInfo reports the device's total and free memory.
	MemoryInfo(ctx context.Context) (MemoryInfo, error)
	// Alloc allocates size bytes of device memory; a failure allocates
	// nothing.
	Alloc(ctx context.Context, size uint64) (Allocation, error)
	// Write copies p into the allocation at off. A range outside the
	// allocation is an error, nothing written.
	Write(ctx context.Context, a Allocation, off uint64, p []byte) error
	// Read copies len(p) bytes of the allocation at off into p.
	Read(ctx context.Context, a Allocation, off uint64, p []byte) error
	// Free releases the allocation. Freeing twice is an error wrapping
	// ErrAllocationMissing.
	Free(ctx context.Context, a Allocation) error
}

// MemoryInfo is a device's memory as its driver reports it.
type MemoryInfo struct {
	Total uint64
	Free  uint64
}

// Allocation is an opaque handle to device memory. Implementations must not
// reveal addresses through String or GoString.
type Allocation interface {
	Size() uint64
}

// LeafDigester is implemented by devices that can hash a shard's leaves
// where it lies (a CUDA kernel over VRAM), so that only the leaf digests
// cross to the host. The result must equal HashLeaves over the same bytes.
type LeafDigester interface {
	LeafDigests(ctx context.Context, a Allocation, n, leafSize uint64) ([]LeafHash, error)
}

// Exporter is implemented by devices that can hand an allocation to a
// consumer process: a file descriptor that maps the same memory (a sealed
// memfd on the simulated GPU, a VMM handle on CUDA). Each call returns a
// new descriptor, which the caller closes once it has passed it on.
type Exporter interface {
	Export(ctx context.Context, a Allocation) (Exported, error)
}

// Exported is an allocation handed out as a file descriptor.
type Exported struct {
	File *os.File
	// Kind says what File is, for the consumer: MemoryMemfd, or a CUDA
	// handle kind.
	Kind string
	// MappedSize is, for MemoryCUDAVMM, the allocation's size (the shard's
	// rounded up to the granularity): what the consumer reserves and maps.
	MappedSize uint64
	// GPUUUID names, for MemoryCUDAVMM, the GPU the memory is on (the
	// consumer's CUDA ordinals need not be the agent's).
	GPUUUID string
}

// MemoryMemfd is the Exported.Kind of a sealed memfd (the simulated GPU):
// the consumer maps it with mmap, read-only.
const MemoryMemfd = "memfd"

// MemoryCUDAVMM is the Exported.Kind of a CUDA VMM allocation exported as
// a POSIX file descriptor (cuMemExportToShareableHandle): the consumer
// imports it with cuMemImportFromShareableHandle and maps it on its GPU.
const MemoryCUDAVMM = "cuda_vmm"

// Admission decides whether a GPU may take shards (the VRAM-only policy).
// Admit returns a non-nil error, with the reason, when it may not.
type Admission interface {
	Admit(ctx context.Context, gpu int) error
}

// AllocationChecker is asked about each allocation right after it is sealed
// (the policy's check that sealed memory is device memory, not managed or
// host memory). A non-nil error refuses the seal.
type AllocationChecker interface {
	CheckAllocation(ctx context.Context, dev Device, a Allocation) error
}

// VerifyMode says where verification hashes the shard.
type VerifyMode string

const (
	// VerifyHost reads the shard back to host memory and hashes it on the
	// CPU cores.
	VerifyHost VerifyMode = "host"
	// VerifyDevice hashes the leaves on the device (LeafDigester) and
	// brings back only the leaf digests.
	VerifyDevice VerifyMode = "gpu"
)
