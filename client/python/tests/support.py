"""Helpers of the client's tests: a safetensors writer and the tool rule."""

import json
import os
import struct
import unittest


def safetensors_bytes(tensors, metadata=None):
    """tensors: [(name, dtype, shape, raw little-endian bytes)] -> the file's bytes.

    The header is padded with spaces to a multiple of 8 bytes, as the
    reference writer does, so every tensor starts 8-byte aligned when each
    one's size is a multiple of 8.
    """
    header, data, off = {}, b"", 0
    if metadata:
        header["__metadata__"] = metadata
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        data += raw
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def require(test, module):
    """Imports module, or skips the test; under VRAMSEAL_REQUIRE_TOOLS=1 a missing module fails it."""
    try:
        return __import__(module)
    except ImportError:
        if os.environ.get("VRAMSEAL_REQUIRE_TOOLS") == "1":
            test.fail("%s is missing under VRAMSEAL_REQUIRE_TOOLS=1 (make test installs Debian's python3-%s)" % (module, module))
        raise unittest.SkipTest("%s is not importable: make test installs Debian's python3-%s" % (module, module))


TORCH_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16", "int64": "I64",
                "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL"}


def torch_safetensors_bytes(state_dict):
    """A torch state dict as .safetensors bytes (written here: no safetensors package)."""
    import ctypes

    items = []
    for name, t in state_dict.items():
        t = t.detach().contiguous().cpu()
        raw = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size()) if t.numel() else b""
        items.append((name, TORCH_DTYPES[str(t.dtype).replace("torch.", "")], tuple(t.shape), raw))
    return safetensors_bytes(items)
