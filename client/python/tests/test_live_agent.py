"""The client against a running agent (cmd/agent, python_e2e_test.go starts one).

These run when the environment names the agent:

- VRAMSEAL_TEST_AGENT: the vramseal-agent binary (for seal, debug and list);
- VRAMSEAL_TEST_CONTROL_SOCKET, VRAMSEAL_TEST_HANDOFF_SOCKET: its sockets;
- VRAMSEAL_TEST_MODEL_DIR: a folder under its model_dirs, to write shards in.

Otherwise they are skipped (under VRAMSEAL_REQUIRE_TOOLS=1 too: the Go test
that starts the agent is what make test runs).
"""

import contextlib
import hashlib
import io
import json
import os
import socket
import struct
import subprocess
import time
import unittest
from unittest import mock

import vramseal
from vramseal import _wire

from support import require, safetensors_bytes

ENV = ("VRAMSEAL_TEST_AGENT", "VRAMSEAL_TEST_CONTROL_SOCKET", "VRAMSEAL_TEST_HANDOFF_SOCKET", "VRAMSEAL_TEST_MODEL_DIR")


def live():
    return all(os.environ.get(k) for k in ENV)


@unittest.skipUnless(live(), "no agent named in the environment (%s); the Go test TestPythonConsumer starts one" % ", ".join(ENV))
class LiveAgentTest(unittest.TestCase):
    counter = 0

    @classmethod
    def setUpClass(cls):
        cls.agent, cls.control, cls.handoff, cls.models = (os.environ[k] for k in ENV)

    def cli(self, *args, ok=True):
        p = subprocess.run([self.agent, *args, "--control.socket", self.control], capture_output=True, text=True, timeout=60)
        if ok and p.returncode != 0:
            self.fail("vramseal-agent %s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr))
        return p

    def shards(self):
        out = json.loads(self.cli("list", "-o", "json").stdout)
        return {s["seal"]["shard_id"]: s for s in out["shards"]}

    def seal_file(self, data):
        LiveAgentTest.counter += 1
        sid = "py-live-%d-%d" % (os.getpid(), self.counter)
        path = os.path.join(self.models, sid + ".safetensors")
        with open(path, "wb") as f:
            f.write(data)
        self.cli("seal", path, "--id", sid, "--gpu", "0")
        self.addCleanup(self.cli, "release", sid, "--force", ok=False)
        return sid

    def setUp(self):
        self.client = vramseal.Client(self.handoff)
        self.addCleanup(self.client.close)

    def test_open_verify_and_read(self):
        data = safetensors_bytes([("w", "F32", (2, 3), struct.pack("<6f", *range(6))), ("i", "I64", (1,), struct.pack("<q", -3))])
        sid = self.seal_file(data)
        with self.client.open(sid) as shard:
            self.assertEqual(shard.nbytes, len(data))
            self.assertEqual(shard.seal["content_sha256"], hashlib.sha256(data).hexdigest())
            self.assertEqual(self.client.verify(shard.seal)["result"], "ok")
            self.assertEqual(hashlib.sha256(memoryview(shard)).hexdigest(), shard.seal["content_sha256"])
            self.assertEqual(self.shards()[sid]["leases"][0]["pid"], os.getpid())
            # The memory a shard serves from can be attached, pinned (what
            # an engine does for a restarted agent).
            with vramseal.Client(self.handoff) as other:
                a = other.attach(sid + "-again", shard, sha256=shard.seal["content_sha256"])
                self.assertEqual(a.seal["content_sha256"], shard.seal["content_sha256"])
                self.assertEqual(self.shards()[sid + "-again"]["origin"], "attached")
                a.detach()
            t = shard.tensors("memoryview")
            self.assertEqual(t["w"].tolist(), [[0, 1, 2], [3, 4, 5]])
            self.assertEqual(t["i"].tolist(), [-3])
            del t
        self.assertEqual(self.shards()[sid]["leases"], [])

    def test_a_corruption_shows_through_the_mapping_and_verify_fails(self):
        require(self, "numpy")
        data = safetensors_bytes([("w", "F32", (4,), struct.pack("<4f", 1, 2, 3, 4))])
        sid = self.seal_file(data)
        with self.client.open(sid) as shard:
            w = shard.tensors("numpy")["w"]
            off = w.ctypes.data - shard.address
            self.cli("debug", "corrupt", sid, "--offset", str(off + 3), "--bit", "6")
            b = struct.pack("<f", 1.0)
            self.assertEqual(w[0], struct.unpack("<f", b[:3] + bytes([b[3] ^ 0x40]))[0])
            with self.assertRaises(vramseal.VramsealError) as cm:
                shard.verify()
            self.assertEqual(cm.exception.kind, "integrity")
            self.assertEqual(cm.exception.result["result"], "digest_mismatch")
            del w
        # A failed shard is not handed out.
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.open(sid)
        self.assertEqual(cm.exception.kind, "integrity")

    def test_the_readme_examples_run(self):
        torch = require(self, "torch")
        from support import torch_safetensors_bytes

        with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
            readme = f.read()
        # The first two examples run on the simulated GPU; the CUDA one needs a GPU.
        blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
        self.assertGreaterEqual(len(blocks), 2)
        torch.manual_seed(3)

        def my_model():
            return torch.nn.Sequential(torch.nn.Linear(32, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

        data = torch_safetensors_bytes(my_model().state_dict())
        path = os.path.join(self.models, "readme-%d.safetensors" % os.getpid())
        with open(path, "wb") as f:
            f.write(data)
        self.cli("seal", path, "--id", "llama-00001", "--gpu", "0")
        self.addCleanup(self.cli, "release", "llama-00001", "--force", ok=False)
        with mock.patch.dict(os.environ, {"VRAMSEAL_HANDOFF_SOCKET": self.handoff}), contextlib.redirect_stdout(io.StringIO()) as out:
            exec(blocks[0], {"MyModel": my_model})
            self.assertIn("tensor(", out.getvalue())
            scope = {"MyModel": my_model, "PUBLISHED_SHA256": hashlib.sha256(data).hexdigest()}
            exec(blocks[1].replace('"/models/tiny.safetensors"', repr(path)), scope)
            self.assertEqual(len(scope["attached"]), 1)
            scope["client"].close()

    def test_refusals(self):
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.open("py-live-nope")
        self.assertEqual(cm.exception.kind, "not_found")
        sid = self.seal_file(b"not a safetensors file, just bytes")
        with self.client.open(sid) as shard:
            with self.assertRaises(vramseal.VramsealError) as cm:
                self.client.open(sid)
            self.assertEqual(cm.exception.kind, "exists")
            with self.assertRaises(vramseal.VramsealError) as cm:
                shard.tensors()
            self.assertEqual(cm.exception.kind, "invalid")
            forged = dict(shard.seal, model_ref="forged")
            self.assertEqual(self.client.verify(forged, check=False)["result"], "signature_invalid")

    def test_attach_detach_and_owner_exit(self):
        data = os.urandom(300000)
        mem = vramseal.memfd_from_bytes(data)
        self.addCleanup(mem.close)
        sid = "py-live-own-%d" % os.getpid()
        a = self.client.attach(sid, mem, gpu=1, model_ref="live@1", sha256=hashlib.sha256(data).hexdigest())
        self.assertEqual(a.seal["content_sha256"], hashlib.sha256(data).hexdigest())
        self.assertEqual((a.seal["gpu_device"], a.seal["model_ref"], a.seal["vram_bytes"]), (1, "live@1", len(data)))
        self.assertEqual(self.shards()[sid]["origin"], "attached")
        self.assertEqual(a.verify()["result"], "ok")
        # Attached memory is its owner's: it is not handed to consumers.
        other = vramseal.Client(self.handoff)
        self.addCleanup(other.close)
        with self.assertRaises(vramseal.VramsealError):
            other.open(sid)
        a.detach()
        self.assertNotIn(sid, self.shards())
        # The owner's connection ending releases what it attached.
        c2 = vramseal.Client(self.handoff)
        c2.attach(sid, mem)
        self.assertIn(sid, self.shards())
        c2.close()
        for _ in range(100):
            if sid not in self.shards():
                break
            time.sleep(0.05)
        self.assertNotIn(sid, self.shards())

    def test_attach_bad_input(self):
        mem = vramseal.memfd_from_bytes(b"x" * 4096)
        self.addCleanup(mem.close)
        sid = "py-live-bad-%d" % os.getpid()
        a = self.client.attach(sid, mem)
        self.addCleanup(a.detach)
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach(sid, mem)
        self.assertEqual(cm.exception.kind, "exists")
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach(sid + "-big", mem, size=8192)
        self.assertEqual(cm.exception.kind, "invalid")
        self.assertIn("fewer than", cm.exception.message)
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach(sid + "-gpu", mem, gpu=99)
        self.assertEqual(cm.exception.kind, "invalid")
        self.assertIn("no GPU 99", cm.exception.message)
        with self.assertRaises(vramseal.VramsealError) as cm:
            self.client.attach(sid + "-pin", mem, sha256="0" * 64)
        self.assertEqual(cm.exception.kind, "integrity")
        # Memory the agent must refuse itself (the client checks first, so
        # this goes around it): a memfd that could shrink.
        fd = os.memfd_create("loose", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        self.addCleanup(os.close, fd)
        os.ftruncate(fd, 4096)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.connect(self.handoff)
        _wire.send(s, {"v": 1, "op": "attach", "id": sid + "-loose", "size": 4096, "files": 1}, [fd])
        resp, fds = _wire.recv(s)
        self.assertEqual(fds, [])
        self.assertFalse(resp["ok"])
        self.assertEqual(resp["error"]["kind"], "invalid")
        self.assertIn("shrinking and growing", resp["error"]["message"])
        # An attach that announces a descriptor and sends none is a bad frame.
        _wire.send(s, {"v": 1, "op": "attach", "id": sid + "-nofd", "size": 4096, "files": 1})
        resp, _ = _wire.recv(s)
        self.assertEqual(resp["error"]["kind"], "invalid")
        # An owner that goes away in the middle of its attach leaves nothing.
        s2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s2.connect(self.handoff)
        _wire.send(s2, {"v": 1, "op": "attach", "id": sid + "-gone", "size": 4096, "files": 1}, [mem.fileno()])
        s2.close()
        time.sleep(0.2)  # let the agent take the request before looking
        for _ in range(100):
            if sid + "-gone" not in self.shards():
                break
            time.sleep(0.05)
        for k in (sid + "-big", sid + "-gpu", sid + "-pin", sid + "-loose", sid + "-nofd", sid + "-gone"):
            self.assertNotIn(k, self.shards())


if __name__ == "__main__":
    unittest.main()
