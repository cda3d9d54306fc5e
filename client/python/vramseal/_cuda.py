"""CUDA shards: a ``cuda_vmm`` shard imported with the CUDA driver API.

On a real GPU the agent answers ``open`` with ``memory`` ``cuda_vmm``: the
descriptor is a VMM allocation exported with cuMemExportToShareableHandle
(CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR), with ``mapped_size`` and
``gpu_uuid``. This module imports it with the driver, loaded at run time
with ctypes from ``libcuda.so.1`` (no toolkit, no compiled extension):

1. the GPU whose UUID is ``gpu_uuid`` (this process's ordinals need not be
   the agent's), its primary context retained and made current;
2. cuMemImportFromShareableHandle(&handle, fd, POSIX_FILE_DESCRIPTOR);
3. cuMemAddressReserve and cuMemMap of ``mapped_size`` bytes;
4. cuMemSetAccess asking for CU_MEM_ACCESS_FLAGS_PROT_READ, falling back to
   PROT_READWRITE where the driver refuses (``CudaShard.read_only`` says
   which took effect: read-only is advisory, the agent's verification is the
   guarantee).

``close()`` unmaps, frees the range, releases the handle and the context,
then ends the lease.
"""

import ctypes
import hashlib

from ._errors import VramsealError

#: The driver library loaded when Client(cuda_library=...) is not given.
DEFAULT_LIBRARY = "libcuda.so.1"

_POSIX_FD = 1
_LOCATION_DEVICE = 1
_PROT_READ = 1
_PROT_READWRITE = 3


class _AccessDesc(ctypes.Structure):
    _fields_ = [("location_type", ctypes.c_int), ("location_id", ctypes.c_int), ("flags", ctypes.c_int)]


class Driver:
    """The CUDA driver loaded into this process (kept loaded: its threads run its code)."""

    def __init__(self, path=None):
        path = path or DEFAULT_LIBRARY
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as e:
            raise VramsealError("unsupported", "loading the CUDA driver %s: %s" % (path, e)) from None
        self.path = path
        self.check("cuInit", self.lib.cuInit(0))

    def check(self, fn, rc):
        if rc != 0:
            raise VramsealError("device_error", "%s: CUDA error %d" % (fn, rc))

    def device(self, uuid):
        """The CUDA device handle of the GPU with this UUID (GPU-…)."""
        n = ctypes.c_int()
        self.check("cuDeviceGetCount", self.lib.cuDeviceGetCount(ctypes.byref(n)))
        for i in range(n.value):
            dev = ctypes.c_int()
            raw = (ctypes.c_ubyte * 16)()
            self.check("cuDeviceGet", self.lib.cuDeviceGet(ctypes.byref(dev), i))
            self.check("cuDeviceGetUuid_v2", self.lib.cuDeviceGetUuid_v2(raw, dev))
            if format_uuid(bytes(raw)) == uuid:
                return dev.value
        raise VramsealError("device_error", "no GPU %s among this process's %d CUDA device(s) (check CUDA_VISIBLE_DEVICES)" % (uuid, n.value))


def format_uuid(raw):
    """A device UUID as nvidia-smi prints it: GPU-8-4-4-4-12 hex."""
    h = raw.hex()
    return "GPU-%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class CudaShard:
    """A sealed shard leased to this process and imported on its GPU.

    ``ptr`` is its device address (for kernels), ``nbytes`` its size,
    ``mapped`` the bytes mapped, ``device`` the CUDA device, ``read_only``
    whether the driver granted read-only access. ``__cuda_array_interface__``
    describes the bytes (read-only), so CUDA-aware libraries can wrap them
    without a copy. ``read()`` copies bytes to the host.
    """

    def __init__(self, client, driver, shard_id, fd, size, seal, mapped, gpu_uuid):
        if not mapped or mapped < size:
            raise VramsealError("protocol", "open %s: the agent announced %r mapped bytes for a %d-byte shard" % (shard_id, mapped, size))
        self._client, self._drv, lib = client, driver, driver.lib
        self.shard_id, self.seal, self.nbytes, self.mapped, self.gpu_uuid = shard_id, seal, size, mapped, gpu_uuid
        self.device = driver.device(gpu_uuid)
        self._ctx = ctypes.c_void_p()
        self._handle = ctypes.c_ulonglong()
        self._ptr = ctypes.c_ulonglong()
        self._undo = []
        self._leased = True
        try:
            driver.check("cuDevicePrimaryCtxRetain", lib.cuDevicePrimaryCtxRetain(ctypes.byref(self._ctx), self.device))
            self._undo.append(lambda: lib.cuDevicePrimaryCtxRelease_v2(self.device))
            self._current()
            driver.check("cuMemImportFromShareableHandle",
                         lib.cuMemImportFromShareableHandle(ctypes.byref(self._handle), ctypes.c_void_p(fd), _POSIX_FD))
            self._undo.append(lambda: lib.cuMemRelease(self._handle))
            u64 = ctypes.c_ulonglong
            driver.check("cuMemAddressReserve", lib.cuMemAddressReserve(ctypes.byref(self._ptr), u64(mapped), u64(0), u64(0), u64(0)))
            self._undo.append(lambda: lib.cuMemAddressFree(self._ptr, u64(mapped)))
            driver.check("cuMemMap", lib.cuMemMap(self._ptr, u64(mapped), u64(0), self._handle, u64(0)))
            self._undo.append(lambda: lib.cuMemUnmap(self._ptr, u64(mapped)))
            self.read_only = self._access(_PROT_READ) == 0
            if not self.read_only:
                driver.check("cuMemSetAccess", self._access(_PROT_READWRITE))
        except BaseException:
            self._release()
            raise
        self.ptr = self._ptr.value

    def _current(self):
        self._drv.check("cuCtxSetCurrent", self._drv.lib.cuCtxSetCurrent(self._ctx))

    def _access(self, flags):
        desc = _AccessDesc(_LOCATION_DEVICE, self.device, flags)
        return self._drv.lib.cuMemSetAccess(self._ptr, ctypes.c_ulonglong(self.mapped), ctypes.byref(desc), ctypes.c_ulonglong(1))

    def _release(self):
        rcs = []
        if self._undo:
            self._current()
        while self._undo:
            rcs.append(self._undo.pop()())
        return rcs

    @property
    def __cuda_array_interface__(self):
        return {"shape": (self.nbytes,), "typestr": "|u1", "data": (self.ptr, True), "version": 3}

    def read(self, offset=0, n=None):
        """Copies n bytes (to the end when None) at offset to the host (cuMemcpyDtoH)."""
        if n is None:
            n = self.nbytes - offset
        if offset < 0 or n < 0 or offset + n > self.nbytes:
            raise ValueError("[%d, %d) outside a %d-byte shard" % (offset, offset + n, self.nbytes))
        if not self._undo:
            raise ValueError("the shard is closed")
        buf = ctypes.create_string_buffer(n)
        self._current()
        self._drv.check("cuMemcpyDtoH_v2", self._drv.lib.cuMemcpyDtoH_v2(buf, ctypes.c_ulonglong(self.ptr + offset), ctypes.c_size_t(n)))
        return buf.raw

    def sha256(self):
        """The plain SHA-256 of the shard's bytes, to compare with seal["content_sha256"]."""
        return hashlib.sha256(self.read()).hexdigest()

    def verify(self):
        """client.verify(self.seal): raises VramsealError(integrity) when the memory changed."""
        return self._client.verify(self.seal)

    @property
    def leased(self):
        return self._leased

    def close(self):
        """Unmaps and releases the import, then ends the lease."""
        try:
            rcs = [rc for rc in self._release() if rc != 0]
            if rcs:
                raise VramsealError("device_error", "releasing the CUDA import: CUDA errors %s" % rcs)
        finally:
            if self._leased:
                self._leased = False
                self._client._end("close", self.shard_id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_shard(client, shard_id, fd, size, seal, memory, resp):
    """Returns the shard object for memory other than a memfd: a CudaShard for cuda_vmm."""
    if memory != "cuda_vmm":
        raise VramsealError("unsupported", "open %s: the agent handed %r memory, which this client cannot use" % (shard_id, memory))
    return CudaShard(client, client._cuda_driver(), shard_id, fd, size, seal, resp.get("mapped_size"), resp.get("gpu_uuid"))
