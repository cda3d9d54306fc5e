"""The consumer socket's protocol, version 1 (docs/consumers.md).

A frame is a 4-byte big-endian length N (1 <= N <= 65536) and N bytes of one
JSON object. File descriptors travel as SCM_RIGHTS ancillary data on the
sendmsg that carries a frame. Frames are read with recvmsg, exactly the 4
header bytes and then exactly N bytes, never through a buffered file object:
the kernel attaches a descriptor to a byte of the stream, and a reader that
consumed that byte without recvmsg would drop the descriptor silently.
"""

import array
import json
import os
import socket
import struct

from ._errors import VramsealError

VERSION = 1
MAX_FRAME = 64 << 10
MAX_FILES = 4

_INT_SIZE = array.array("i").itemsize
_ANC_SIZE = socket.CMSG_SPACE(MAX_FILES * _INT_SIZE)
_RECV_FLAGS = getattr(socket, "MSG_CMSG_CLOEXEC", 0)


def encode(msg):
    """Returns msg (a dict) as one frame."""
    body = json.dumps(msg, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if not 1 <= len(body) <= MAX_FRAME:
        raise VramsealError("invalid", "a %d-byte message; a frame holds 1 to %d" % (len(body), MAX_FRAME))
    return struct.pack(">I", len(body)) + body


def send(sock, msg, fds=()):
    """Sends msg as one frame, with fds attached to its first byte."""
    frame = encode(msg)
    if len(fds) > MAX_FILES:
        raise VramsealError("invalid", "%d descriptors in one frame, at most %d" % (len(fds), MAX_FILES))
    anc = []
    if fds:
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sent = sock.sendmsg([frame], anc)
    # The descriptors went with the first part; the rest is plain bytes.
    if sent < len(frame):
        sock.sendall(frame[sent:])


def _take_fds(ancdata, fds):
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % _INT_SIZE
            got = array.array("i")
            got.frombytes(data[:usable])
            fds.extend(got)


def _recv_exact(sock, n, fds):
    """Reads exactly n bytes with recvmsg, collecting descriptors on the way."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        nbytes, ancdata, flags, _ = sock.recvmsg_into([view[got:]], _ANC_SIZE, _RECV_FLAGS)
        _take_fds(ancdata, fds)
        if flags & socket.MSG_CTRUNC or len(fds) > MAX_FILES:
            raise VramsealError("protocol", "more than %d descriptors arrived with one frame" % MAX_FILES)
        if nbytes == 0:
            if got == 0 and n == 4:
                raise EOFError("the agent closed the connection")
            raise VramsealError("unreachable", "the agent closed the connection in the middle of a frame")
        got += nbytes
    return bytes(buf)


def recv(sock):
    """Reads one frame: returns (message dict, list of received fds).

    The caller owns the descriptors (opened close-on-exec). EOFError means
    the agent closed the connection between frames.
    """
    fds = []
    try:
        head = _recv_exact(sock, 4, fds)
        (n,) = struct.unpack(">I", head)
        if not 1 <= n <= MAX_FRAME:
            raise VramsealError("protocol", "a frame of %d bytes; want 1 to %d" % (n, MAX_FRAME))
        body = _recv_exact(sock, n, fds)
        try:
            msg = json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise VramsealError("protocol", "the answer is not JSON: %s" % e) from None
        if not isinstance(msg, dict):
            raise VramsealError("protocol", "the answer is not a JSON object")
        return msg, fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
