"""Memory an engine owns and attaches: memfds sealed against shrink and grow.

On the simulated GPU, attach takes a memfd created with MFD_ALLOW_SEALING and
sealed with F_SEAL_SHRINK and F_SEAL_GROW: the agent maps it, and a memfd
that could shrink under that mapping would kill the agent (SIGBUS). The owner
keeps writing it through its own mapping; a change while attached is what
the agent's verification catches.
"""

import ctypes
import fcntl
import mmap
import os
import threading
import weakref

from ._errors import VramsealError

# Python's fcntl lacks F_SEAL_FUTURE_WRITE (Linux 5.1).
F_SEAL_FUTURE_WRITE = 0x10

#: The seals attach requires.
REQUIRED_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW

_CHUNK = 8 << 20


class _PyBuffer(ctypes.Structure):
    _fields_ = [
        ("buf", ctypes.c_void_p),
        ("obj", ctypes.c_void_p),
        ("len", ctypes.c_ssize_t),
        ("itemsize", ctypes.c_ssize_t),
        ("readonly", ctypes.c_int),
        ("ndim", ctypes.c_int),
        ("format", ctypes.c_char_p),
        ("shape", ctypes.c_void_p),
        ("strides", ctypes.c_void_p),
        ("suboffsets", ctypes.c_void_p),
        ("internal", ctypes.c_void_p),
    ]


_get_buffer = ctypes.pythonapi.PyObject_GetBuffer
_get_buffer.argtypes = [ctypes.py_object, ctypes.POINTER(_PyBuffer), ctypes.c_int]
_get_buffer.restype = ctypes.c_int
_release_buffer = ctypes.pythonapi.PyBuffer_Release
_release_buffer.argtypes = [ctypes.POINTER(_PyBuffer)]
_release_buffer.restype = None


def buffer_address(obj):
    """Returns the address of the first byte of obj's buffer (read-only ones too)."""
    view = _PyBuffer()
    _get_buffer(obj, ctypes.byref(view), 0)  # PyBUF_SIMPLE
    try:
        return view.buf or 0
    finally:
        _release_buffer(ctypes.byref(view))


def seals_of(fd):
    """Returns the F_GET_SEALS bits of fd, or None when fd is not sealable."""
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        return None


def check_attachable(fd):
    """Raises VramsealError(invalid) unless fd is a memfd sealed against shrink and grow."""
    seals = seals_of(fd)
    if seals is None:
        raise VramsealError("invalid", "the memory is not a memfd (attach takes a memfd made with MFD_ALLOW_SEALING, e.g. by vramseal.memfd_from_file)")
    if seals & REQUIRED_SEALS != REQUIRED_SEALS:
        raise VramsealError(
            "invalid",
            "the memfd is not sealed against shrinking and growing (F_SEAL_SHRINK|F_SEAL_GROW): create it with "
            "MFD_ALLOW_SEALING and add those seals, as vramseal.memfd_from_file does",
        )


# The mappings of live Memfd objects, by address, so that a model's storages
# can be traced back to the memfd that holds them (attach_model).
_live_lock = threading.Lock()
_live = weakref.WeakSet()


def memfd_containing(address, nbytes):
    """Returns the live Memfd whose mapping holds [address, address+nbytes), or None."""
    with _live_lock:
        mems = list(_live)
    for m in mems:
        base = m.address
        if base and base <= address and address + nbytes <= base + m.nbytes:
            return m
    return None


class Memfd:
    """A memfd this process owns, sealed against shrink and grow.

    ``fileno()`` is what ``Client.attach`` sends; ``mapping`` is the owner's
    shared read-write mapping of it (``memoryview(m.mapping)``, or tensors
    built on it). The owner may write it; while it is attached every change
    is a verification failure: detach first.

    ``close()`` closes the descriptor and unmaps the mapping. While views
    of the mapping live (tensors, memoryviews), the unmap waits until the last
    one is gone; the memory stays valid for them meanwhile.
    """

    def __init__(self, fd, nbytes, name="vramseal"):
        if nbytes < 1:
            raise ValueError("a memfd to attach holds at least one byte")
        self._fd = fd
        self.nbytes = nbytes
        self.name = name
        #: The plain SHA-256 (hex) the bytes were checked against when
        #: loaded, if any: attach_model pins the attachment to it.
        self.sha256 = None
        self.mapping = mmap.mmap(fd, nbytes, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        self.address = buffer_address(self.mapping)
        with _live_lock:
            _live.add(self)

    @classmethod
    def create(cls, nbytes, name="vramseal"):
        """Creates a zero-filled memfd of nbytes, sealed against shrink and grow."""
        if nbytes < 1:
            raise ValueError("a memfd to attach holds at least one byte")
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, nbytes)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, REQUIRED_SEALS)
            return cls(fd, nbytes, name)
        except BaseException:
            os.close(fd)
            raise

    def fileno(self):
        if self._fd < 0:
            raise ValueError("the memfd is closed")
        return self._fd

    @property
    def closed(self):
        return self._fd < 0

    def close(self):
        with _live_lock:
            _live.discard(self)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self.mapping.close()
        except BufferError:
            pass  # views still live: unmapped when the last one goes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<vramseal.Memfd %r %d bytes%s>" % (self.name, self.nbytes, " closed" if self.closed else "")


def memfd_from_bytes(data, name="vramseal"):
    """Returns a Memfd holding a copy of data (bytes-like)."""
    src = memoryview(data).cast("B")
    m = Memfd.create(len(src), name)
    m.mapping[:] = src
    return m


def memfd_from_file(path, name=None):
    """Returns a Memfd holding the bytes of the file at path (read once, straight into the memfd)."""
    with open(path, "rb", buffering=0) as f:
        n = os.fstat(f.fileno()).st_size
        m = Memfd.create(n, name or os.path.basename(path))
        try:
            view = memoryview(m.mapping)
            try:
                got = 0
                while got < n:
                    k = f.readinto(view[got:got + _CHUNK])
                    if not k:
                        raise VramsealError("invalid", "%s shrank while it was read (%d of %d bytes)" % (path, got, n))
                    got += k
            finally:
                view.release()
        except BaseException:
            m.close()
            raise
    return m
