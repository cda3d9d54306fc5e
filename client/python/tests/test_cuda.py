"""CUDA shards through the fake CUDA driver of sealer/cuda (testdata/fakecuda.c).

The fake backs VMM allocations with memfds, so an allocation exported by
one copy of the library (standing in for the agent's driver) and imported
by another (the client's) shares real memory, through the same dlopen path
as the real driver.
"""

import ctypes
import os
import shutil
import subprocess
import tempfile
import unittest

import vramseal
from fake_agent import FakeAgent

FAKECUDA = os.path.join(os.path.dirname(__file__), "..", "..", "..", "sealer", "cuda", "testdata", "fakecuda.c")
GRANULARITY = 65536  # the fake's


def build_fake(test, where):
    gcc = shutil.which("gcc")
    if gcc is None:
        if os.environ.get("VRAMSEAL_REQUIRE_TOOLS") == "1":
            test.fail("gcc is missing under VRAMSEAL_REQUIRE_TOOLS=1")
        raise unittest.SkipTest("gcc is not on PATH: it builds the fake CUDA driver")
    out = os.path.join(where, "libcuda.so.1")
    subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-o", out, FAKECUDA, "-lpthread"], check=True, capture_output=True)
    return out


class _Prop(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("handle_types", ctypes.c_int), ("location_type", ctypes.c_int),
                ("location_id", ctypes.c_int), ("win32", ctypes.c_void_p), ("flags", ctypes.c_ubyte * 8)]


class _Access(ctypes.Structure):
    _fields_ = [("location_type", ctypes.c_int), ("location_id", ctypes.c_int), ("flags", ctypes.c_int)]


class AgentMemory:
    """A VMM allocation made by 'the agent' (its own copy of the fake), written and exported."""

    def __init__(self, lib_path, data):
        self.lib = lib = ctypes.CDLL(lib_path)
        u64 = ctypes.c_ulonglong
        self.ctx = ctx = ctypes.c_void_p()
        assert lib.cuInit(0) == 0
        assert lib.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), 0) == 0
        assert lib.cuCtxSetCurrent(ctx) == 0
        self.mapped = (len(data) + GRANULARITY - 1) // GRANULARITY * GRANULARITY
        h, self.ptr = u64(), u64()
        prop = _Prop(1, 1, 1, 0)
        assert lib.cuMemCreate(ctypes.byref(h), u64(self.mapped), ctypes.byref(prop), u64(0)) == 0
        assert lib.cuMemAddressReserve(ctypes.byref(self.ptr), u64(self.mapped), u64(0), u64(0), u64(0)) == 0
        assert lib.cuMemMap(self.ptr, u64(self.mapped), u64(0), h, u64(0)) == 0
        assert lib.cuMemSetAccess(self.ptr, u64(self.mapped), ctypes.byref(_Access(1, 0, 3)), u64(1)) == 0
        self.write(0, data)
        fd = ctypes.c_int(-1)
        assert lib.cuMemExportToShareableHandle(ctypes.byref(fd), h, 1, u64(0)) == 0
        self.fd, self.size = fd.value, len(data)
        raw = (ctypes.c_ubyte * 16)()
        assert lib.cuDeviceGetUuid_v2(raw, 0) == 0
        self.uuid = vramseal._cuda.format_uuid(bytes(raw))

    def write(self, off, data):
        assert self.lib.cuCtxSetCurrent(self.ctx) == 0  # the context is current per thread
        assert self.lib.cuMemcpyHtoD_v2(ctypes.c_ulonglong(self.ptr.value + off), data, ctypes.c_size_t(len(data))) == 0

    def read(self):
        buf = ctypes.create_string_buffer(self.size)
        assert self.lib.cuCtxSetCurrent(self.ctx) == 0
        assert self.lib.cuMemcpyDtoH_v2(buf, self.ptr, ctypes.c_size_t(self.size)) == 0
        return buf.raw


class CudaShardTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="vramseal-cuda-")
        self.addCleanup(shutil.rmtree, self.dir)
        lib = build_fake(self, self.dir)
        os.makedirs(os.path.join(self.dir, "agent"))
        agent_lib = os.path.join(self.dir, "agent", "libcuda.so.1")
        shutil.copy(lib, agent_lib)  # another file: another instance of the fake
        self.client_lib = lib
        self.data = os.urandom(100000)
        self.mem = AgentMemory(agent_lib, self.data)
        self.agent = FakeAgent()
        self.addCleanup(self.agent.close)
        self.agent.add_cuda_shard("g", self.mem.fd, self.mem.size, self.mem.mapped, self.mem.uuid, self.mem.read)

    def test_open_imports_the_shard_read_only(self):
        with vramseal.Client(self.agent.path, cuda_library=self.client_lib) as c:
            shard = c.open("g")
            self.assertIsInstance(shard, vramseal.CudaShard)
            self.assertTrue(shard.read_only)
            self.assertEqual(shard.read(), self.data)
            self.assertEqual(shard.sha256(), shard.seal["content_sha256"])
            self.assertEqual(shard.__cuda_array_interface__["data"], (shard.ptr, True))
            self.assertEqual(shard.__cuda_array_interface__["shape"], (len(self.data),))
            self.assertEqual(shard.verify()["result"], "ok")
            # The same memory: a change on the agent's side is seen through the import, and caught.
            self.mem.write(10, bytes([self.data[10] ^ 1]))
            self.assertEqual(shard.read(10, 1), bytes([self.data[10] ^ 1]))
            with self.assertRaises(vramseal.VramsealError) as cm:
                shard.verify()
            self.assertEqual(cm.exception.kind, "integrity")
            shard.close()
            self.assertFalse(shard.leased)
            self.assertEqual(self.agent.leases, set())
            lib = c._cuda_driver().lib
            lib.fakecuda_get.restype = ctypes.c_longlong
            for k in (b"vmm_handles", b"vmm_maps", b"vmm_reserved"):
                self.assertEqual(lib.fakecuda_get(k), 0, k)
            with self.assertRaises(ValueError):
                shard.read()

    def test_read_write_where_read_only_is_refused(self):
        with vramseal.Client(self.agent.path, cuda_library=self.client_lib) as c:
            c._cuda_driver().lib.fakecuda_set(b"refuse_read_only", ctypes.c_longlong(1))
            with c.open("g") as shard:
                self.assertFalse(shard.read_only)
                self.assertEqual(shard.read(), self.data)

    def test_an_unknown_gpu_ends_the_lease(self):
        self.agent.shards["g"]["cuda"]["gpu_uuid"] = "GPU-00000000-0000-0000-0000-000000000000"
        with vramseal.Client(self.agent.path, cuda_library=self.client_lib) as c:
            with self.assertRaises(vramseal.VramsealError) as cm:
                c.open("g")
            self.assertEqual(cm.exception.kind, "device_error")
            self.assertIn("no GPU GPU-0000", str(cm.exception))
        self.assertEqual(self.agent.leases, set())

    def test_no_driver(self):
        with vramseal.Client(self.agent.path, cuda_library=os.path.join(self.dir, "missing.so")) as c:
            with self.assertRaises(vramseal.VramsealError) as cm:
                c.open("g")
            self.assertEqual(cm.exception.kind, "unsupported")
        self.assertEqual(self.agent.leases, set())



class AttachIPCTest(unittest.TestCase):
    def test_the_request_carries_the_handle_and_no_descriptor(self):
        agent = FakeAgent()
        self.addCleanup(agent.close)
        uuid = "GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff"
        with vramseal.Client(agent.path) as c:
            att = c.attach_cuda_ipc("w", bytes(range(64)), uuid, 512, 4096, model_ref="m@1")
            self.assertEqual(att.seal["shard_id"], "w")
            with self.assertRaises(ValueError):
                c.attach_cuda_ipc("w", b"short", uuid, 0, 1)
        req = agent.requests[-1]
        self.assertEqual((req["ipc_handle"], req["gpu_uuid"], req["offset"], req["size"], req["model_ref"]),
                         (bytes(range(64)).hex(), uuid, 512, 4096, "m@1"))
        self.assertNotIn("files", req)

    def test_attach_a_vmm_descriptor(self):
        agent = FakeAgent()
        self.addCleanup(agent.close)
        uuid = "GPU-f0f1f2f3-f4f5-f6f7-f8f9-fafbfcfdfeff"
        r, w = os.pipe()  # any descriptor: the fake agent only checks it arrives
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        with vramseal.Client(agent.path) as c:
            with self.assertRaises(vramseal.VramsealError):  # the fake agent takes only memfds
                c.attach_cuda_vmm("v", r, uuid, 4096)
        req = agent.requests[-1]
        self.assertEqual((req["gpu_uuid"], req["size"], req["files"]), (uuid, 4096, 1))
        self.assertNotIn("ipc_handle", req)


if __name__ == "__main__":
    unittest.main()
