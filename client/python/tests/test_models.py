import os
import tempfile
import unittest

import vramseal
from vramseal import models

from fake_agent import FakeAgent
from support import require, torch_safetensors_bytes


class ModelsTest(unittest.TestCase):
    def setUp(self):
        self.torch = torch = require(self, "torch")
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)
        self.path = os.path.join(self.dir.name, "net.safetensors")
        with open(self.path, "wb") as f:
            f.write(torch_safetensors_bytes(self.net.state_dict()))
        self.agent = FakeAgent()
        self.addCleanup(self.agent.close)
        self.client = vramseal.Client(self.agent.path)
        self.addCleanup(self.client.close)

    def fresh(self):
        torch = self.torch
        torch.manual_seed(1)  # other weights than the file's
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.ReLU(), torch.nn.Linear(16, 3))

    def test_load_model_builds_the_weights_on_the_memfd(self):
        torch = self.torch
        model = self.fresh()
        mem = vramseal.load_model(model, self.path)
        x = torch.randn(4, 8)
        self.assertTrue(torch.equal(model(x), self.net(x)))
        for name, t in model.state_dict().items():
            self.assertTrue(mem.address <= t.data_ptr() < mem.address + mem.nbytes, name)
        self.assertEqual(models.segments_of(model), [mem])

    def test_attach_model_attaches_one_segment_not_each_parameter(self):
        model = self.fresh()
        vramseal.load_model(model, self.path)
        with vramseal.attach_model(self.client, model, "net", model_ref="net@1") as att:
            self.assertEqual(len(att), 1)
            self.assertEqual(att.seals[0]["shard_id"], "net-00000")
            self.assertEqual(att.seals[0]["vram_bytes"], os.path.getsize(self.path))
            self.assertEqual(att.verify()[0]["result"], "ok")
            with self.torch.no_grad():
                model[0].weight[0, 0] += 1  # the owner changes its weights while attached
            with self.assertRaises(vramseal.VramsealError) as cm:
                att.verify()
            self.assertEqual(cm.exception.kind, "integrity")
        self.assertEqual(self.agent.requests[-1], {"v": 1, "op": "detach", "id": "net-00000"})

    def test_a_pinned_load_is_attached_pinned(self):
        import hashlib

        with open(self.path, "rb") as f:
            want = hashlib.sha256(f.read()).hexdigest()
        model = self.fresh()
        vramseal.load_model(model, self.path, sha256=want)
        vramseal.attach_model(self.client, model, "pinned").detach()
        self.assertEqual(self.agent.requests[0]["sha256"], want)
        with self.assertRaises(vramseal.VramsealError) as cm:
            vramseal.load_model(self.fresh(), self.path, sha256="0" * 64)
        self.assertEqual(cm.exception.kind, "integrity")

    def test_a_model_in_ordinary_memory_cannot_be_attached(self):
        with self.assertRaises(vramseal.VramsealError) as cm:
            vramseal.attach_model(self.client, self.fresh(), "plain")
        self.assertEqual(cm.exception.kind, "invalid")
        self.assertIn("load_model", cm.exception.message)
        self.assertEqual(self.agent.requests, [])

    def two_segments(self):
        torch = self.torch
        model = self.fresh()
        sd = self.net.state_dict()
        paths = []
        for i, keys in enumerate((["0.weight", "0.bias", "1.weight", "1.bias"], ["3.weight", "3.bias"])):
            p = os.path.join(self.dir.name, "part%d.safetensors" % i)
            with open(p, "wb") as f:
                f.write(torch_safetensors_bytes({k: sd[k] for k in keys}))
            paths.append(p)
        for p in paths:
            vramseal.load_model(model, p, strict=False)
        x = torch.randn(2, 8)
        self.assertTrue(torch.equal(model(x), self.net(x)))
        return model

    def test_the_cap(self):
        model = self.two_segments()
        with self.assertRaises(vramseal.VramsealError) as cm:
            vramseal.attach_model(self.client, model, "cap", max_segments=1)
        self.assertEqual(cm.exception.kind, "too_many")
        self.assertEqual(self.agent.requests, [])
        att = vramseal.attach_model(self.client, model, "cap", max_segments=2)
        self.assertEqual([s["shard_id"] for s in att.seals], ["cap-00000", "cap-00001"])
        att.detach()

    def test_a_failed_attach_detaches_the_ones_made(self):
        model = self.two_segments()
        self.agent.add_shard("dup-00001", b"taken")
        with self.assertRaises(vramseal.VramsealError) as cm:
            vramseal.attach_model(self.client, model, "dup")
        self.assertEqual(cm.exception.kind, "exists")
        self.assertEqual([(r["op"], r["id"]) for r in self.agent.requests], [("attach", "dup-00000"), ("attach", "dup-00001"), ("detach", "dup-00000")])

    def test_bad_prefixes(self):
        model = self.fresh()
        vramseal.load_model(model, self.path)
        for p in ("", ".hidden", "a..b", "sp ace", "x" * 251):
            with self.subTest(p), self.assertRaises(ValueError):
                vramseal.attach_model(self.client, model, p)

    def test_bind_model_checks_the_fit(self):
        torch = self.torch
        with self.assertRaises(vramseal.VramsealError):
            vramseal.bind_model(self.fresh(), {"0.weight": torch.zeros(16, 8)})
        with self.assertRaises(vramseal.VramsealError):
            vramseal.bind_model(self.fresh(), {"0.weight": torch.zeros(3, 3)}, strict=False)


if __name__ == "__main__":
    unittest.main()
