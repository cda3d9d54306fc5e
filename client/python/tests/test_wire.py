import os
import socket
import struct
import unittest

import vramseal
from vramseal import _wire

from fake_agent import send_frame


class WireTest(unittest.TestCase):
    def setUp(self):
        self.a, self.b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(self.a.close)
        self.addCleanup(self.b.close)

    def test_round_trip(self):
        _wire.send(self.a, {"v": 1, "op": "open", "id": "x"})
        msg, fds = _wire.recv(self.b)
        self.assertEqual(msg, {"v": 1, "op": "open", "id": "x"})
        self.assertEqual(fds, [])

    def test_frame_bytes_are_the_documented_ones(self):
        frame = _wire.encode({"v": 1, "op": "open", "id": "llama-00001"})
        self.assertEqual(frame[:4], b"\x00\x00\x00\x26")  # 38 bytes of JSON
        self.assertEqual(frame[4:], b'{"v":1,"op":"open","id":"llama-00001"}')

    def test_descriptor_on_a_frame_split_byte_by_byte(self):
        r, w = os.pipe()
        self.addCleanup(os.close, w)
        send_frame(self.a, {"v": 1, "ok": True, "files": 1}, fds=[r], split=True)
        os.close(r)
        msg, fds = _wire.recv(self.b)
        self.assertEqual(msg["files"], 1)
        self.assertEqual(len(fds), 1)
        os.write(w, b"ok")
        self.assertEqual(os.read(fds[0], 2), b"ok")
        os.close(fds[0])

    def test_two_frames_back_to_back_are_read_apart(self):
        self.a.sendall(_wire.encode({"n": 1}) + _wire.encode({"n": 2}))
        self.assertEqual(_wire.recv(self.b)[0], {"n": 1})
        self.assertEqual(_wire.recv(self.b)[0], {"n": 2})

    def test_eof_between_frames(self):
        self.a.close()
        with self.assertRaises(EOFError):
            _wire.recv(self.b)

    def test_eof_inside_a_frame(self):
        self.a.sendall(struct.pack(">I", 10) + b"{}")
        self.a.close()
        with self.assertRaises(vramseal.VramsealError) as cm:
            _wire.recv(self.b)
        self.assertEqual(cm.exception.kind, "unreachable")

    def test_bad_lengths_and_bodies(self):
        for raw in (struct.pack(">I", 0), struct.pack(">I", 70000), struct.pack(">I", 3) + b"{x}", struct.pack(">I", 2) + b"[]"):
            a, b = socket.socketpair()
            with a, b:
                a.sendall(raw)
                with self.assertRaises(vramseal.VramsealError) as cm:
                    _wire.recv(b)
                self.assertEqual(cm.exception.kind, "protocol", raw)

    def test_descriptors_of_a_bad_frame_are_closed(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        self.a.sendmsg([struct.pack(">I", 3) + b"{x}"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", w))])
        os.close(w)
        with self.assertRaises(vramseal.VramsealError):
            _wire.recv(self.b)
        # Every copy of the write end is closed: the read end sees EOF.
        self.assertEqual(os.read(r, 1), b"")

    def test_too_large_a_message_is_refused_before_sending(self):
        with self.assertRaises(vramseal.VramsealError) as cm:
            _wire.send(self.a, {"x": "y" * 70000})
        self.assertEqual(cm.exception.kind, "invalid")


if __name__ == "__main__":
    unittest.main()
