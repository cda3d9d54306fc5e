import struct
import unittest

import vramseal
from vramseal import safetensors

from support import require, safetensors_bytes

F32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
I64 = struct.pack("<2q", -7, 1 << 40)


def sample():
    return safetensors_bytes([("w", "F32", (2, 3), F32), ("n", "I64", (2,), I64), ("e", "F32", (0, 4), b"")], {"format": "pt"})


class HeaderTest(unittest.TestCase):
    def test_parse(self):
        infos, meta = safetensors.parse_header(sample())
        self.assertEqual([i.name for i in infos], ["w", "n", "e"])
        self.assertEqual(meta, {"format": "pt"})
        self.assertEqual(infos[0].shape, (2, 3))
        self.assertEqual(infos[1].nbytes, 16)
        self.assertEqual(infos[1].start, infos[0].end)

    def test_bad_files(self):
        good = sample()
        (n,) = struct.unpack("<Q", good[:8])
        cases = {
            "short": b"\x01\x00",
            "header longer than the file": struct.pack("<Q", 1 << 20) + b"{}",
            "not json": struct.pack("<Q", 2) + b"{x",
            "not an object": struct.pack("<Q", 2) + b"[]",
            "offsets outside": safetensors_bytes([("w", "F32", (2,), b"\0" * 8)])[:-4],
            "size does not fit the shape": safetensors_bytes([("w", "F32", (3,), b"\0" * 8)]),
            "bad shape": safetensors_bytes([("w", "F32", (-1,), b"")]),
        }
        for name, data in cases.items():
            with self.subTest(name), self.assertRaises(vramseal.VramsealError) as cm:
                safetensors.parse_header(data)
            self.assertEqual(cm.exception.kind, "invalid")
        with self.assertRaises(vramseal.VramsealError) as cm:
            safetensors.parse_header(safetensors_bytes([("w", "C64", (1,), b"\0" * 8)]))
        self.assertEqual(cm.exception.kind, "unsupported")


class ViewsTest(unittest.TestCase):
    def test_memoryview_backend(self):
        buf = bytearray(sample())
        v = safetensors.views(buf, "memoryview")
        self.assertEqual(v["w"].tolist(), [[1, 2, 3], [4, 5, 6]])
        self.assertEqual(v["n"].tolist(), [-7, 1 << 40])
        self.assertEqual(v["e"].nbytes, 0)
        start = safetensors.parse_header(buf)[0][0].start
        struct.pack_into("<f", buf, start, 9.5)  # the view sees it: no copy
        self.assertEqual(v["w"][0, 0], 9.5)
        self.assertIs(v["w"].obj, buf)

    def test_numpy_backend(self):
        np = require(self, "numpy")
        buf = bytearray(sample())
        v = safetensors.views(buf, "numpy")
        self.assertEqual(v["w"].tolist(), [[1, 2, 3], [4, 5, 6]])
        self.assertEqual(v["w"].dtype, np.float32)
        self.assertEqual(v["e"].shape, (0, 4))
        start = safetensors.parse_header(buf)[0][0].start
        struct.pack_into("<f", buf, start, 9.5)
        self.assertEqual(v["w"][0, 0], 9.5)

    def test_torch_backend(self):
        torch = require(self, "torch")
        buf = bytearray(sample())
        v = safetensors.views(buf, "torch")
        self.assertTrue(torch.equal(v["w"], torch.tensor([[1, 2, 3], [4, 5, 6]], dtype=torch.float32)))
        self.assertEqual(v["n"].tolist(), [-7, 1 << 40])
        self.assertEqual(tuple(v["e"].shape), (0, 4))
        start = safetensors.parse_header(buf)[0][0].start
        struct.pack_into("<f", buf, start, 9.5)
        self.assertEqual(v["w"][0, 0].item(), 9.5)

    def test_unknown_backend(self):
        with self.assertRaises(ValueError):
            safetensors.views(sample(), "jax")


if __name__ == "__main__":
    unittest.main()
