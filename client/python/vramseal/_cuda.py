"""CUDA shards: the seam where the driver API comes in.

On a real GPU the agent answers ``open`` with ``memory`` ``cuda_vmm``: the
descriptor is a VMM allocation exported with cuMemExportToShareableHandle
(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR). Using it takes the CUDA driver
API, loaded at run time with ctypes from ``libcuda.so.1`` (no toolkit, no
compiled extension):

1. cuMemImportFromShareableHandle(&handle, fd, POSIX_FILE_DESCRIPTOR);
2. cuMemAddressReserve(&ptr, size, granularity, 0, 0);
3. cuMemMap(ptr, size, 0, handle, 0);
4. cuMemSetAccess(ptr, size, [{location: the GPU, flags: PROT_READ}]);

then a CudaShard exposes ``__cuda_array_interface__`` (read-only) over
[ptr, ptr+size) and its tensors() wraps slices of it, and close() unmaps,
releases the handle and ends the lease. Attaching engine-owned CUDA memory
sends a VMM fd or a legacy CUDA IPC handle (cuIpcGetMemHandle of a storage
segment) instead of a memfd.

This client does not do that yet: open_shard refuses such memory with a
VramsealError of kind ``unsupported``, after which the caller ends the
lease.
"""

from ._errors import VramsealError


def open_shard(client, shard_id, fd, size, seal, memory):
    """Returns a shard object for memory other than a memfd (not yet: raises)."""
    raise VramsealError(
        "unsupported",
        "open %s: the agent handed %r memory; this client maps only memfd shards (simulated GPU) so far" % (shard_id, memory),
    )
