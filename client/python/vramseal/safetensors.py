"""Zero-copy tensor views of a .safetensors file held in memory.

The format: an 8-byte little-endian header length N, N bytes of a JSON object
naming each tensor's ``dtype``, ``shape`` and ``data_offsets`` (begin, end;
relative to the byte after the header), an optional ``__metadata__`` object
of strings, then the tensors' bytes, little-endian.
"""

import json
import math
import struct
import sys
import warnings

from ._errors import VramsealError

MAX_HEADER = 100 << 20

#: dtype -> (bytes per element, torch dtype name, numpy dtype, memoryview format)
DTYPES = {
    "F64": (8, "float64", "<f8", "d"),
    "F32": (4, "float32", "<f4", "f"),
    "F16": (2, "float16", "<f2", "e"),
    "BF16": (2, "bfloat16", None, None),
    "I64": (8, "int64", "<i8", "q"),
    "I32": (4, "int32", "<i4", "i"),
    "I16": (2, "int16", "<i2", "h"),
    "I8": (1, "int8", "i1", "b"),
    "U8": (1, "uint8", "u1", "B"),
    "BOOL": (1, "bool", "?", "?"),
}

BACKENDS = ("torch", "numpy", "memoryview")


class TensorInfo:
    """One tensor of the header: where its bytes are in the whole buffer."""

    __slots__ = ("name", "dtype", "shape", "start", "end")

    def __init__(self, name, dtype, shape, start, end):
        self.name, self.dtype, self.shape, self.start, self.end = name, dtype, shape, start, end

    @property
    def nbytes(self):
        return self.end - self.start

    def __repr__(self):
        return "TensorInfo(%r, %s, %r, [%d, %d))" % (self.name, self.dtype, self.shape, self.start, self.end)


def _bad(msg):
    return VramsealError("invalid", "not a safetensors file: " + msg)


def parse_header(buf):
    """Parses the header of the safetensors bytes in buf (any buffer).

    Returns (list of TensorInfo in the header's order, metadata dict). The
    offsets are absolute: from the first byte of buf.
    """
    mv = memoryview(buf).cast("B")
    try:
        if len(mv) < 8:
            raise _bad("%d bytes, shorter than the 8-byte header length" % len(mv))
        (n,) = struct.unpack("<Q", mv[:8])
        if n < 2 or n > MAX_HEADER or 8 + n > len(mv):
            raise _bad("a header of %d bytes in %d" % (n, len(mv)))
        try:
            header = json.loads(bytes(mv[8:8 + n]).decode("utf-8"))
        except ValueError as e:
            raise _bad("the header is not JSON: %s" % e) from None
        if not isinstance(header, dict):
            raise _bad("the header is not a JSON object")
        base, size = 8 + n, len(mv) - 8 - n
        metadata = header.pop("__metadata__", None) or {}
        if not isinstance(metadata, dict):
            raise _bad("__metadata__ is not an object")
        infos = []
        for name, d in header.items():
            if not isinstance(d, dict) or set(d) - {"dtype", "shape", "data_offsets"}:
                raise _bad("tensor %r: want dtype, shape and data_offsets" % name)
            dtype, shape, offs = d.get("dtype"), d.get("shape"), d.get("data_offsets")
            if dtype not in DTYPES:
                raise VramsealError("unsupported", "tensor %r: dtype %r is not one this client reads" % (name, dtype))
            if not isinstance(shape, list) or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape):
                raise _bad("tensor %r: bad shape %r" % (name, shape))
            if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in offs)):
                raise _bad("tensor %r: bad data_offsets %r" % (name, offs))
            begin, end = offs
            if not 0 <= begin <= end <= size:
                raise _bad("tensor %r: data_offsets %r outside the %d data bytes" % (name, offs, size))
            want = math.prod(shape) * DTYPES[dtype][0]
            if end - begin != want:
                raise _bad("tensor %r: %d bytes for %s %r, want %d" % (name, end - begin, dtype, shape, want))
            infos.append(TensorInfo(name, dtype, tuple(shape), base + begin, base + end))
        return infos, metadata
    finally:
        mv.release()


def default_backend():
    """torch when importable, else numpy, else memoryview."""
    for name in ("torch", "numpy"):
        try:
            __import__(name)
            return name
        except ImportError:
            pass
    return "memoryview"


def views(buf, backend=None):
    """Returns {name: zero-copy view} of the safetensors bytes in buf.

    Each view holds a memoryview of buf, so buf (a mapping) stays mapped
    while any view lives. A read-only buf gives read-only views.
    """
    if sys.byteorder != "little":
        raise VramsealError("unsupported", "safetensors is little-endian; this machine is not")
    backend = backend or default_backend()
    if backend not in BACKENDS:
        raise ValueError("backend %r: want one of %s" % (backend, ", ".join(BACKENDS)))
    infos, _ = parse_header(buf)
    whole = memoryview(buf).cast("B")
    make = {"torch": _torch_view, "numpy": _numpy_view, "memoryview": _memoryview_view}[backend]
    return {i.name: make(whole, i) for i in infos}


def _torch_view(whole, info):
    import torch

    dtype = getattr(torch, DTYPES[info.dtype][1])
    if info.nbytes == 0:
        return torch.empty(info.shape, dtype=dtype)
    with warnings.catch_warnings():
        # A read-only buffer gives a tensor torch warns about: it is read-only
        # on purpose (the shard's pages are mapped PROT_READ).
        warnings.filterwarnings("ignore", message="The given buffer is not writable")
        # torch keeps a reference to the memoryview it is given, and that
        # memoryview keeps the mapping exported (unmappable) while it lives.
        t = torch.frombuffer(whole[info.start:info.end], dtype=dtype)
    return t.reshape(info.shape)


def _numpy_view(whole, info):
    import numpy

    np_dtype = DTYPES[info.dtype][2]
    if np_dtype is None:
        raise VramsealError("unsupported", "tensor %r: numpy has no %s; use the torch or memoryview backend" % (info.name, info.dtype))
    return numpy.frombuffer(whole[info.start:info.end], dtype=np_dtype).reshape(info.shape)


def _memoryview_view(whole, info):
    fmt = DTYPES[info.dtype][3]
    part = whole[info.start:info.end]
    if fmt is None:  # no memoryview format: the raw bytes
        return part
    if info.nbytes == 0 or any(x == 0 for x in info.shape):
        return part.cast(fmt)
    return part.cast(fmt, list(info.shape))
