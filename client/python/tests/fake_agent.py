"""A stand-in for the agent's consumer socket, for the client's unit tests.

It speaks protocol version 1 as docs/consumers.md states it, hands out
memfds sealed the way the agent seals them, and records what it was asked.
It is not the agent: tests against the real one are in test_live_agent.py.
"""

import array
import fcntl
import hashlib
import json
import mmap
import os
import socket
import struct
import tempfile
import threading

F_SEAL_FUTURE_WRITE = 0x10
AGENT_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_SEAL


def send_frame(conn, msg, fds=(), split=False):
    body = json.dumps(msg).encode()
    frame = struct.pack(">I", len(body)) + body
    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
    if split:  # one byte per sendmsg, the descriptors on the first
        conn.sendmsg([frame[:1]], anc)
        for i in range(1, len(frame)):
            conn.sendall(frame[i:i + 1])
        return
    conn.sendmsg([frame], anc)


def recv_frame(conn):
    """Returns (message, fds) or (None, []) at EOF."""
    fds = []

    def exact(n):
        buf = b""
        while len(buf) < n:
            data, anc, _, _ = conn.recvmsg(n - len(buf), socket.CMSG_SPACE(16))
            for level, kind, d in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(d[: len(d) - len(d) % a.itemsize])
                    fds.extend(a)
            if not data:
                return None
            buf += data
        return buf

    head = exact(4)
    if head is None:
        return None, fds
    (n,) = struct.unpack(">I", head)
    body = exact(n)
    return json.loads(body), fds


class FakeAgent:
    def __init__(self, split=False):
        self.dir = tempfile.mkdtemp(prefix="vramseal-fake-")
        self.path = os.path.join(self.dir, "handoff.sock")
        self.split = split
        self.shards = {}  # id -> dict(fd, map, seal, digest)
        self.requests = []
        self.leases = set()
        self.lock = threading.Lock()
        self.ln = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.ln.bind(self.path)
        self.ln.listen(16)
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def add_shard(self, shard_id, data):
        fd = os.memfd_create(shard_id, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        os.ftruncate(fd, len(data))
        m = mmap.mmap(fd, len(data), flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        m[:] = data
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, AGENT_SEALS)
        seal = {"shard_id": shard_id, "gpu_device": 0, "vram_bytes": len(data), "digest": "sha256-tree-v1:" + "0" * 64,
                "leaf_size": 262144, "content_sha256": hashlib.sha256(data).hexdigest(), "model_ref": "",
                "sealed_at": "2026-12-01T00:00:00Z", "worker_id": "fake", "signature": "f" * 64}
        self.shards[shard_id] = {"fd": fd, "map": m, "seal": seal, "origin": "sealed"}
        return seal

    def add_cuda_shard(self, shard_id, fd, size, mapped, gpu_uuid, read):
        """A shard handed out as a CUDA VMM descriptor (fd, owned here);
        read() returns its bytes now, for verify."""
        seal = {"shard_id": shard_id, "gpu_device": 0, "vram_bytes": size, "digest": "sha256-tree-v1:" + "0" * 64,
                "leaf_size": 262144, "content_sha256": hashlib.sha256(read()).hexdigest(), "model_ref": "",
                "sealed_at": "2026-12-01T00:00:00Z", "worker_id": "fake", "signature": "f" * 64}
        self.shards[shard_id] = {"fd": fd, "map": None, "read": read, "seal": seal, "origin": "sealed",
                                 "cuda": {"memory": "cuda_vmm", "mapped_size": mapped, "gpu_uuid": gpu_uuid}}
        return seal

    def corrupt(self, shard_id, offset, bit=0):
        m = self.shards[shard_id]["map"]
        m[offset] = m[offset] ^ (1 << bit)

    def close(self):
        self.ln.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for s in self.shards.values():
            try:
                if s["map"] is not None:
                    s["map"].close()
            except BufferError:
                pass
            os.close(s["fd"])
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.rmdir(self.dir)

    def _serve(self):
        while True:
            try:
                c, _ = self.ln.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _fail(self, c, kind, msg):
        send_frame(c, {"v": 1, "ok": False, "error": {"kind": kind, "message": msg}}, split=self.split)

    def _conn(self, c):
        mine = set()
        attached = set()
        try:
            while True:
                req, fds = recv_frame(c)
                if req is None:
                    return
                with self.lock:
                    self.requests.append(req)
                op = req.get("op")
                if req.get("v") != 1:
                    self._fail(c, "version", "protocol version %r is not served" % req.get("v"))
                    return
                if op == "open":
                    s = self.shards.get(req["id"])
                    if s is None or s["origin"] != "sealed":
                        self._fail(c, "not_found", "no such shard %r" % req["id"])
                    elif req["id"] in mine:
                        self._fail(c, "exists", "this connection already holds a lease on %r" % req["id"])
                    else:
                        mine.add(req["id"])
                        with self.lock:
                            self.leases.add(req["id"])
                        answer = {"v": 1, "ok": True, "seal": s["seal"], "size": s["seal"]["vram_bytes"], "memory": "memfd", "files": 1}
                        answer.update(s.get("cuda", {}))
                        send_frame(c, answer, fds=[s["fd"]], split=self.split)
                elif op == "close":
                    if req["id"] not in mine:
                        self._fail(c, "not_found", "this connection holds no lease on %r" % req["id"])
                    else:
                        mine.discard(req["id"])
                        with self.lock:
                            self.leases.discard(req["id"])
                        send_frame(c, {"v": 1, "ok": True}, split=self.split)
                elif op == "verify":
                    seal = req.get("seal") or {}
                    s = self.shards.get(seal.get("shard_id"))
                    if s is None:
                        self._fail(c, "not_found", "no such shard")
                        continue
                    result = "ok"
                    if seal != s["seal"]:
                        result = "signature_invalid"
                    elif hashlib.sha256(s["read"]() if "read" in s else s["map"]).hexdigest() != s["seal"]["content_sha256"]:
                        result = "digest_mismatch"
                    send_frame(c, {"v": 1, "ok": True, "result": {"shard_id": seal["shard_id"], "result": result,
                                                                  "first_bad_offset": 0 if result == "digest_mismatch" else -1,
                                                                  "bad_chunks": 1 if result == "digest_mismatch" else 0}}, split=self.split)
                elif op == "attach" and req.get("ipc_handle"):
                    # A CUDA IPC handle: the fake cannot open it; it answers a seal of its claim.
                    if fds or len(req["ipc_handle"]) != 128:
                        for fd in fds:
                            os.close(fd)
                        self._fail(c, "invalid", "attach by CUDA IPC handle carries 128 hex digits and no descriptor")
                        continue
                    seal = {"shard_id": req["id"], "gpu_device": 0, "vram_bytes": req.get("size", 0), "digest": "sha256-tree-v1:" + "0" * 64,
                            "leaf_size": 262144, "content_sha256": "0" * 64, "model_ref": req.get("model_ref", ""),
                            "sealed_at": "2026-12-01T00:00:00Z", "worker_id": "fake", "signature": "e" * 64}
                    send_frame(c, {"v": 1, "ok": True, "seal": seal}, split=self.split)
                elif op == "attach":
                    if len(fds) != 1 or req.get("files") != 1:
                        for fd in fds:
                            os.close(fd)
                        self._fail(c, "invalid", "attach carries one descriptor")
                        continue
                    fd = fds[0]
                    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
                    size = req.get("size", 0)
                    if seals & 6 != 6:
                        os.close(fd)
                        self._fail(c, "invalid", "the memfd is not sealed against shrinking and growing")
                    elif req["id"] in self.shards:
                        os.close(fd)
                        self._fail(c, "exists", "a shard %r exists" % req["id"])
                    elif size < 1 or size > os.fstat(fd).st_size:
                        os.close(fd)
                        self._fail(c, "invalid", "size %d" % size)
                    else:
                        m = mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
                        digest = hashlib.sha256(m).hexdigest()
                        if req.get("sha256") not in (None, digest):
                            m.close()
                            os.close(fd)
                            self._fail(c, "integrity", "content_sha256 mismatch")
                            continue
                        seal = {"shard_id": req["id"], "gpu_device": req.get("gpu", 0), "vram_bytes": size, "digest": "sha256-tree-v1:" + "0" * 64,
                                "leaf_size": 262144, "content_sha256": digest, "model_ref": req.get("model_ref", ""),
                                "sealed_at": "2026-12-01T00:00:00Z", "worker_id": "fake", "signature": "e" * 64}
                        self.shards[req["id"]] = {"fd": fd, "map": m, "seal": seal, "origin": "attached"}
                        attached.add(req["id"])
                        send_frame(c, {"v": 1, "ok": True, "seal": seal}, split=self.split)
                elif op == "detach":
                    if req["id"] not in attached:
                        self._fail(c, "not_found", "this connection attached no %r" % req["id"])
                    else:
                        attached.discard(req["id"])
                        s = self.shards.pop(req["id"])
                        s["map"].close()
                        os.close(s["fd"])
                        send_frame(c, {"v": 1, "ok": True}, split=self.split)
                else:
                    self._fail(c, "invalid", "unknown operation %r" % op)
        except OSError:
            return
        finally:
            with self.lock:
                self.leases -= mine
            for sid in attached:
                s = self.shards.pop(sid, None)
                if s:
                    s["map"].close()
                    os.close(s["fd"])
            c.close()
