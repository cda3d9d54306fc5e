import errno
import gc
import hashlib
import mmap
import os
import socket
import struct
import tempfile
import threading
import unittest
from unittest import mock

import vramseal

from fake_agent import FakeAgent, recv_frame, send_frame
from support import require, safetensors_bytes

DATA = bytes(range(256)) * 64 + b"tail"
MODEL = safetensors_bytes([("w", "F32", (2, 2), struct.pack("<4f", 1, 2, 3, 4)), ("b", "F32", (2,), struct.pack("<2f", 5, 6))])


class ClientTest(unittest.TestCase):
    split = False

    def setUp(self):
        self.agent = FakeAgent(split=self.split)
        self.addCleanup(self.agent.close)
        self.agent.add_shard("raw", DATA)
        self.agent.add_shard("model", MODEL)
        self.client = vramseal.Client(self.agent.path, timeout=10)
        self.addCleanup(self.client.close)

    def test_open_maps_the_shard_read_only_and_shared(self):
        with self.client.open("raw") as shard:
            self.assertIsInstance(shard, mmap.mmap)
            self.assertEqual(shard.nbytes, len(DATA))
            self.assertEqual(len(shard), len(DATA))
            self.assertEqual(shard.seal["shard_id"], "raw")
            self.assertEqual(shard.shard_id, "raw")
            mv = memoryview(shard)
            self.assertTrue(mv.readonly)
            self.assertEqual(hashlib.sha256(mv).hexdigest(), shard.seal["content_sha256"])
            with self.assertRaises(TypeError):
                shard[0] = 1
            # The agent's own mapping and the shard's are the same memory.
            self.agent.corrupt("raw", 10, bit=3)
            self.assertEqual(mv[10], DATA[10] ^ 8)
            self.assertNotEqual(shard.address, 0)
            mv.release()
        self.assertTrue(shard.closed)
        self.assertFalse(shard.leased)
        self.assertEqual(self.agent.leases, set())

    def test_the_descriptor_is_not_kept(self):
        self.client.open("raw").close()  # connected
        before = len(os.listdir("/proc/self/fd"))
        shard = self.client.open("raw")
        # The received descriptor (fileno()) and mmap's own duplicate.
        self.assertEqual(len(os.listdir("/proc/self/fd")), before + 2)
        self.assertEqual(os.fstat(shard.fileno()).st_size, len(DATA))
        shard.close()
        self.assertEqual(len(os.listdir("/proc/self/fd")), before)
        with self.assertRaises(ValueError):
            shard.fileno()

    def test_the_memory_a_shard_serves_from_can_be_attached(self):
        # What an engine does when the agent restarts: it attaches the
        # memory it still computes with, pinned to the seal it had.
        with self.client.open("raw") as shard:
            other = vramseal.Client(self.agent.path)
            self.addCleanup(other.close)
            a = other.attach("raw-again", shard, sha256=shard.seal["content_sha256"])
            self.assertEqual(a.seal["content_sha256"], shard.seal["content_sha256"])
            a.detach()

    def test_a_shared_writable_mapping_of_the_shard_is_refused(self):
        # What the agent's seals mean for a consumer: the descriptor it gets
        # cannot be mapped shared and writable.
        fd = self.agent.shards["raw"]["fd"]
        with self.assertRaises(OSError) as cm:
            mmap.mmap(fd, len(DATA), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.assertEqual(cm.exception.errno, errno.EPERM)

    def test_verify(self):
        with self.client.open("raw") as shard:
            self.assertEqual(self.client.verify(shard.seal)["result"], "ok")
            self.assertEqual(shard.verify()["result"], "ok")
            self.agent.corrupt("raw", 100)
            with self.assertRaises(vramseal.VramsealError) as cm:
                shard.verify()
            self.assertEqual(cm.exception.kind, "integrity")
            self.assertEqual(cm.exception.result["result"], "digest_mismatch")
            self.assertEqual(self.client.verify(shard.seal, check=False)["result"], "digest_mismatch")
        with self.assertRaises(TypeError):
            self.client.verify('{"shard_id": "raw"}')

    def test_refusals_are_errors_with_a_kind(self):
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.open("nope")
        self.assertEqual((cm.exception.kind, "no such shard" in cm.exception.message), ("not_found", True))
        with self.client.open("raw"):
            with self.assertRaises(vramseal.VramsealError) as cm:
                self.client.open("raw")
            self.assertEqual(cm.exception.kind, "exists")
        # The connection is still good after a refusal.
        with self.client.open("raw") as shard:
            self.assertEqual(shard.nbytes, len(DATA))

    def test_unreachable(self):
        c = vramseal.Client(os.path.join(self.agent.dir, "none.sock"))
        with self.assertRaises(vramseal.VramsealError) as cm:
            c.open("raw")
        self.assertEqual(cm.exception.kind, "unreachable")
        self.assertIn("none.sock", cm.exception.message)

    def test_the_socket_path_defaults(self):
        with mock.patch.dict(os.environ, {"VRAMSEAL_HANDOFF_SOCKET": self.agent.path}):
            self.assertEqual(vramseal.Client().socket_path, self.agent.path)
        with mock.patch.dict(os.environ, clear=True):
            self.assertEqual(vramseal.Client().socket_path, "/run/vramseal/handoff.sock")

    def test_the_end_of_the_connection_is_the_end_of_the_leases(self):
        shard = self.client.open("raw")
        for c in self.agent.conns:
            c.shutdown(2)
        with self.assertRaises(vramseal.VramsealError) as cm:
            shard.verify()
        self.assertEqual(cm.exception.kind, "unreachable")
        # No reconnection behind the consumer's back.
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.open("raw")
        self.assertEqual(cm.exception.kind, "unreachable")
        shard.close()  # nothing to end: no error

    def test_tensors_memoryview(self):
        with self.client.open("model") as shard:
            t = shard.tensors("memoryview")
            self.assertEqual(t["w"].tolist(), [[1, 2], [3, 4]])
            self.assertTrue(t["w"].readonly)

    def test_tensors_numpy_outlive_close(self):
        require(self, "numpy")
        shard = self.client.open("model")
        t = shard.tensors("numpy")
        self.assertFalse(t["w"].flags.writeable)
        shard.close()
        # The lease ended, the mapping stays for the views.
        self.assertEqual(self.agent.leases, set())
        self.assertFalse(shard.closed)
        self.assertEqual(t["b"].tolist(), [5, 6])
        del t
        gc.collect()

    def test_tensors_torch_are_views_of_the_mapping(self):
        require(self, "torch")
        with self.client.open("model") as shard:
            t = shard.tensors()
            for v in t.values():
                self.assertTrue(shard.address <= v.data_ptr() < shard.address + shard.nbytes)
            self.assertEqual(t["w"].tolist(), [[1, 2], [3, 4]])
            start = shard.address
            # A change of the shared memory shows in the tensor.
            off = t["w"].data_ptr() - start
            self.agent.corrupt("model", off + 3, bit=6)  # the sign and exponent byte of w[0,0]
            self.assertNotEqual(t["w"][0, 0].item(), 1.0)
        # Still readable after close: the views keep the mapping.
        self.assertEqual(t["b"].tolist(), [5, 6])
        with self.assertRaises(ValueError):
            shard.tensors()  # no new views of a shard whose lease ended
        shard.close()  # closing twice is fine

    def test_attach_and_detach(self):
        mem = vramseal.memfd_from_bytes(b"engine weights" * 100)
        self.addCleanup(mem.close)
        with self.client.attach("own-1", mem, gpu=1, model_ref="m@1") as a:
            self.assertEqual(a.seal["shard_id"], "own-1")
            self.assertEqual(a.seal["vram_bytes"], 1400)
            self.assertEqual(a.seal["gpu_device"], 1)
            self.assertEqual(a.verify()["result"], "ok")
            mem.mapping[0] ^= 1  # the owner changes its memory while attached
            with self.assertRaises(vramseal.VramsealError) as cm:
                a.verify()
            self.assertEqual(cm.exception.kind, "integrity")
        self.assertFalse(a.attached)
        req = self.agent.requests[0]
        self.assertEqual(req, {"v": 1, "op": "attach", "id": "own-1", "size": 1400, "files": 1, "gpu": 1, "model_ref": "m@1"})
        self.assertEqual(self.agent.requests[-1], {"v": 1, "op": "detach", "id": "own-1"})

    def test_attach_an_int_fd_pinned(self):
        data = b"x" * 5000
        mem = vramseal.memfd_from_bytes(data)
        self.addCleanup(mem.close)
        a = self.client.attach("own-2", mem.fileno(), sha256=hashlib.sha256(data[:4096]).hexdigest(), size=4096)
        self.assertEqual(a.seal["vram_bytes"], 4096)
        a.detach()
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach("own-3", mem, sha256="0" * 64)
        self.assertEqual(cm.exception.kind, "integrity")

    def test_attach_refuses_memory_that_could_shrink(self):
        fd = os.memfd_create("loose", os.MFD_CLOEXEC)
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, 4096)
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach("loose", fd)
        self.assertEqual(cm.exception.kind, "invalid")
        self.assertIn("MFD_ALLOW_SEALING", cm.exception.message)
        self.assertIn("F_SEAL_SHRINK", cm.exception.message)
        fd2 = os.memfd_create("unsealed", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.addCleanup(os.close, fd2)
        os.ftruncate(fd2, 4096)
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach("unsealed", fd2)
        self.assertIn("F_SEAL_SHRINK", cm.exception.message)
        with self.assertRaises(TypeError):
            self.client.attach("bytes", b"not a memfd")
        self.assertEqual(self.agent.requests, [])  # refused before it reached the agent

    def test_memfd_from_file(self):
        path = os.path.join(self.agent.dir, "weights.bin")
        data = os.urandom(3 << 20) + b"end"
        with open(path, "wb") as f:
            f.write(data)
        self.addCleanup(os.unlink, path)
        with vramseal.memfd_from_file(path) as mem:
            self.assertEqual(mem.nbytes, len(data))
            self.assertEqual(bytes(mem.mapping), data)
            self.assertEqual(os.fstat(mem.fileno()).st_size, len(data))
            with self.assertRaises(OSError):
                os.ftruncate(mem.fileno(), 10)  # sealed against shrinking
        self.assertTrue(mem.closed)


class ConnectionTest(unittest.TestCase):
    """The client against agents that misbehave or refuse."""

    def serve_once(self, answer):
        """A socket whose server reads one request, then calls answer(conn)."""
        d = tempfile.mkdtemp(prefix="vramseal-conn-")
        self.addCleanup(os.rmdir, d)
        path = os.path.join(d, "s.sock")
        ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ln.bind(path)
        ln.listen(1)
        self.addCleanup(os.unlink, path)
        self.addCleanup(ln.close)

        def run():
            c, _ = ln.accept()
            with c:
                recv_frame(c)
                answer(c)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.addCleanup(t.join, 5)
        return path

    def test_no_answer_is_a_timeout_and_ends_the_connection(self):
        gate = threading.Event()
        path = self.serve_once(lambda conn: gate.wait(5))
        self.addCleanup(gate.set)  # before the server is joined
        c = vramseal.Client(path, timeout=0.2)
        with self.assertRaises(vramseal.VramsealError) as cm:
            c.open("x")
        self.assertEqual(cm.exception.kind, "timeout")
        with self.assertRaises(vramseal.VramsealError) as cm:
            c.open("x")
        self.assertEqual(cm.exception.kind, "unreachable")

    def test_a_refused_caller(self):
        def refuse(conn):
            send_frame(conn, {"v": 1, "ok": False, "error": {"kind": "forbidden", "message": "not allowed: uid 1000"}})

        c = vramseal.Client(self.serve_once(refuse))
        with self.assertRaises(vramseal.VramsealError) as cm:
            c.open("x")
        self.assertEqual((cm.exception.kind, cm.exception.message), ("forbidden", "not allowed: uid 1000"))
        with self.assertRaises(vramseal.VramsealError) as cm:
            c.open("x")
        self.assertEqual(cm.exception.kind, "unreachable")

    def test_an_answer_without_its_descriptor(self):
        c = vramseal.Client(self.serve_once(lambda conn: send_frame(conn, {"v": 1, "ok": True, "seal": {}, "size": 1, "memory": "memfd", "files": 1})))
        with self.assertRaises(vramseal.VramsealError) as cm:
            c.open("x")
        self.assertEqual(cm.exception.kind, "protocol")

    def test_a_client_shared_between_threads(self):
        agent = FakeAgent()
        self.addCleanup(agent.close)
        seal = agent.add_shard("s", b"shared")
        c = vramseal.Client(agent.path)
        self.addCleanup(c.close)
        results = []

        def work():
            for _ in range(20):
                results.append(c.verify(seal)["result"])

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, ["ok"] * 160)


class SplitFramesClientTest(ClientTest):
    """The same, with every answer sent one byte per sendmsg."""

    split = True


if __name__ == "__main__":
    unittest.main()
