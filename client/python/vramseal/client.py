"""The consumer socket's client: open sealed shards, verify seals, attach memory."""

import mmap
import os
import socket
import threading

from . import _cuda, _wire, memory as _memory, safetensors as _safetensors
from ._errors import VramsealError

#: Where the agent serves consumers when handoff.socket says so.
DEFAULT_SOCKET = "/run/vramseal/handoff.sock"

#: The environment variable that overrides DEFAULT_SOCKET.
SOCKET_ENV = "VRAMSEAL_HANDOFF_SOCKET"


class Client:
    """A connection to the agent's consumer socket (docs/consumers.md).

    ``socket_path`` defaults to $VRAMSEAL_HANDOFF_SOCKET, else
    /run/vramseal/handoff.sock. The connection is made on the first request
    (the agent drops a connection that sends nothing for 10 seconds) and is
    the lease: every shard opened and every memory attached through it is
    held until closed, detached, or until the connection ends (``close()``,
    or the process exits). A Client never reconnects by itself: the end of
    the connection is the end of the guarantee, reported as a
    VramsealError of kind ``unreachable``.

    ``timeout`` bounds each request in seconds (None: no bound). Requests
    are serialised, so a Client may be shared between threads.

    ``cuda_library`` is the CUDA driver loaded, on the first CUDA shard
    opened, to import it (libcuda.so.1 when None).
    """

    def __init__(self, socket_path=None, *, timeout=60.0, cuda_library=None):
        self.socket_path = socket_path or os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
        self.timeout = timeout
        self.cuda_library = cuda_library
        self._sock = None
        self._lock = threading.Lock()
        self._dead = None
        self._cuda = None

    def _cuda_driver(self):
        """The CUDA driver, loaded on first use."""
        with self._lock:
            if self._cuda is None:
                self._cuda = _cuda.Driver(self.cuda_library)
            return self._cuda

    # --- the connection -------------------------------------------------

    def _connect(self):
        if self._dead is not None:
            raise VramsealError("unreachable", self._dead)
        if self._sock is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            s.settimeout(self.timeout)
            try:
                s.connect(self.socket_path)
            except OSError as e:
                s.close()
                raise VramsealError("unreachable", "consumer socket %s: %s" % (self.socket_path, e.strerror or e)) from None
            self._sock = s
        return self._sock

    def _fail(self, why):
        """Ends the connection after a failure that leaves it unusable."""
        self._dead = why
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _call(self, req, fds=()):
        """Sends req, returns (answer, received fds); refusals raise VramsealError."""
        req = dict(req, v=_wire.VERSION)
        with self._lock:
            sock = self._connect()
            werr = None
            try:
                _wire.send(sock, req, fds)
            except OSError as e:
                # Read anyway: an agent that refuses a caller answers at
                # once and closes, and its answer says why.
                werr = e
            try:
                resp, got = _wire.recv(sock)
            except socket.timeout:
                self._fail("the agent did not answer within %ss" % self.timeout)
                raise VramsealError("timeout", self._dead) from None
            except EOFError:
                self._fail("the agent closed the connection%s" % (" (%s)" % werr if werr else ""))
                raise VramsealError("unreachable", self._dead) from None
            except OSError as e:
                self._fail("the connection failed: %s" % e)
                raise VramsealError("unreachable", self._dead) from None
            except VramsealError as e:
                self._fail(e.message)
                raise
        if not resp.get("ok"):
            for fd in got:
                os.close(fd)
            err = resp.get("error")
            if not isinstance(err, dict):
                err = {}
            kind = err.get("kind") or "internal"
            if kind in ("forbidden", "version"):  # the agent closes the connection after these
                with self._lock:
                    self._fail("the agent closed the connection: %s" % err.get("message", ""))
            raise VramsealError(kind, err.get("message") or "the agent refused without saying why")
        return resp, got

    def close(self):
        """Ends the connection, and with it every lease and attachment it holds."""
        with self._lock:
            if self._dead is None:
                self._dead = "the client was closed"
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- requests --------------------------------------------------------

    def open(self, shard_id):
        """Leases the sealed shard and maps its memory: returns a Shard, or a
        CudaShard for a CUDA shard (``memory`` ``cuda_vmm``), imported on
        its GPU with the CUDA driver.

        Check the seal before use: ``client.verify(shard.seal)``.
        """
        resp, fds = self._call({"op": "open", "id": shard_id})
        try:
            if len(fds) != 1 or resp.get("files") != 1:
                raise VramsealError("protocol", "open %s: the answer carried %d descriptors, want 1" % (shard_id, len(fds)))
            seal, size, kind = resp.get("seal"), resp.get("size"), resp.get("memory")
            if not isinstance(seal, dict) or seal.get("shard_id") != shard_id or seal.get("vram_bytes") != size:
                raise VramsealError("protocol", "open %s: the answer's seal does not name this shard and size" % shard_id)
            if kind == "memfd":
                shard = Shard(self, shard_id, fds[0], size, seal)
                fds.clear()  # the Shard owns the descriptor now
                return shard
            return _cuda.open_shard(self, shard_id, fds[0], size, seal, kind, resp)
        except BaseException:
            self._close_lease_quietly(shard_id)
            raise
        finally:
            for fd in fds:
                os.close(fd)

    def _close_lease_quietly(self, shard_id):
        try:
            self._call({"op": "close", "id": shard_id})
        except VramsealError:
            pass

    def verify(self, seal, *, check=True):
        """Verify-before-use: the agent checks the seal record (a dict, as
        open or attach returned it) and verifies the memory now.

        Returns the verification result (a dict with ``result`` ``ok`` when
        intact). When the memory changed and ``check`` is true, raises a
        VramsealError of kind ``integrity`` whose ``result`` is that dict.
        """
        if not isinstance(seal, dict):
            raise TypeError("verify takes a seal record as a dict, as open or attach returned it")
        resp, fds = self._call({"op": "verify", "seal": seal})
        for fd in fds:
            os.close(fd)
        result = resp.get("result")
        if not isinstance(result, dict):
            raise VramsealError("protocol", "the verify answer has no result")
        if check and result.get("result") != "ok":
            where = ""
            if result.get("first_bad_offset", -1) >= 0:
                where = ", first bad chunk at byte %d, %d bad chunks" % (result["first_bad_offset"], result.get("bad_chunks", 0))
            raise VramsealError("integrity", "shard %s: %s%s" % (result.get("shard_id"), result.get("result"), where), result=result)
        return result

    def attach(self, shard_id, memory, *, gpu=None, model_ref=None, sha256=None, size=None):
        """Registers memory this process owns: the agent seals what it finds
        there and re-verifies it in place until it is detached or this
        connection ends.

        ``memory``: on the simulated GPU an int fd, or an object with
        ``fileno()``, of a memfd created with MFD_ALLOW_SEALING and sealed
        against shrink and grow (vramseal.memfd_from_file makes one).
        ``size``: the bytes to seal from offset 0 (default: all of it).
        ``sha256``: the expected plain SHA-256 of those bytes (hex); a
        mismatch refuses the attach. Returns an Attachment.
        """
        if isinstance(memory, int) and not isinstance(memory, bool):
            fd = memory
        elif hasattr(memory, "fileno"):
            fd = memory.fileno()
        else:
            raise TypeError("attach takes a memfd as an int fd or an object with fileno(), not %s "
                            "(for CUDA memory use attach_cuda_ipc)" % type(memory).__name__)
        _memory.check_attachable(fd)
        if size is None:
            size = os.fstat(fd).st_size
        req = {"op": "attach", "id": shard_id, "size": size, "files": 1}
        if gpu is not None:
            req["gpu"] = gpu
        return self._attach(req, model_ref, sha256, [fd], memory)

    def attach_cuda_vmm(self, shard_id, fd, gpu_uuid, size, *, model_ref=None, sha256=None):
        """Registers CUDA memory this process owns as a VMM descriptor (the
        preferred way on CUDA): ``fd`` from cuMemExportToShareableHandle
        (CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) of memory made with
        cuMemCreate, ``size`` the bytes to seal from its start, on the GPU
        ``gpu_uuid`` (GPU-…). The caller keeps and closes ``fd``. Returns an
        Attachment.
        """
        if not isinstance(fd, int) or isinstance(fd, bool) or size < 1:
            raise ValueError("attach_cuda_vmm takes an int descriptor and a size of at least 1 byte")
        req = {"op": "attach", "id": shard_id, "gpu_uuid": gpu_uuid, "size": size, "files": 1}
        return self._attach(req, model_ref, sha256, [fd], None)

    def attach_cuda_ipc(self, shard_id, handle, gpu_uuid, offset, size, *, model_ref=None, sha256=None):
        """Registers CUDA memory this process owns by its legacy IPC handle:
        ``handle`` the 64 bytes of cudaIpcMemHandle_t of the allocator
        segment, ``offset`` and ``size`` the bytes to seal in it, on the GPU
        ``gpu_uuid`` (GPU-…). For a PyTorch CUDA storage,
        ``storage._share_cuda_()`` gives the handle, the storage's offset
        and size in the segment. Legacy IPC works only when the agent sees
        this process's pid (one pid namespace); otherwise the agent refuses
        with kind ``invalid``. Returns an Attachment.
        """
        handle = bytes(handle)
        if len(handle) != 64:
            raise ValueError("a CUDA IPC handle is 64 bytes, not %d" % len(handle))
        req = {"op": "attach", "id": shard_id, "ipc_handle": handle.hex(), "gpu_uuid": gpu_uuid, "offset": offset, "size": size}
        return self._attach(req, model_ref, sha256, [], None)

    def _attach(self, req, model_ref, sha256, fds, memory):
        """Sends an attach request (with the optional model_ref and sha256)
        and returns its Attachment, keeping memory referenced."""
        shard_id = req["id"]
        if model_ref is not None:
            req["model_ref"] = model_ref
        if sha256 is not None:
            req["sha256"] = sha256
        resp, extra = self._call(req, fds=fds) if fds else self._call(req)
        for e in extra:
            os.close(e)
        seal = resp.get("seal")
        if not isinstance(seal, dict) or seal.get("shard_id") != shard_id:
            raise VramsealError("protocol", "attach %s: the answer's seal does not name this shard" % shard_id)
        return Attachment(self, shard_id, seal, memory)

    def _end(self, op, shard_id):
        with self._lock:
            gone = self._dead is not None
        if gone:
            return  # the connection's end already ended it
        try:
            self._call({"op": op, "id": shard_id})
        except VramsealError as e:
            if e.kind != "unreachable":
                raise


class Shard(mmap.mmap):
    """A sealed shard leased to this process, mapped read-only and shared.

    It is an ``mmap.mmap`` (PROT_READ, MAP_SHARED) of the shard's memfd, so
    ``memoryview(shard)``, ``bytes(shard[a:b])`` and ``hashlib`` work on it
    directly, with no copy: these are the very pages the agent re-verifies.
    Writing through it is refused (TypeError).

    ``seal`` is the signed seal record (a dict), ``nbytes`` its size,
    ``shard_id`` its id, ``address`` where the mapping starts, ``fileno()``
    the memfd.

    ``close()`` ends the lease (the agent may then release the shard) and
    unmaps the shard. Views from ``tensors()`` or ``memoryview()`` keep the
    mapping alive: while any lives, ``close()`` still ends the lease but the
    unmap waits until the last view is gone. Those views keep reading the
    same bytes, but once the lease ended nothing guarantees them: the agent
    may release the shard and stop verifying it.
    """

    def __new__(cls, client, shard_id, fd, size, seal):
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        try:
            self = super().__new__(cls, fd, size, flags=flags, prot=mmap.PROT_READ)
        except (OSError, ValueError) as e:
            raise VramsealError("device_error", "open %s: mapping %d bytes: %s" % (shard_id, size, e)) from None
        self._client = client
        self._fd = fd
        self.shard_id = shard_id
        self.seal = seal
        self.nbytes = size
        self.address = _memory.buffer_address(self)
        self._leased = True
        return self

    def fileno(self):
        """The shard's memfd (until close()): e.g. to attach the memory this
        process serves from to a restarted agent, pinned to
        ``seal["content_sha256"]``."""
        if self._fd < 0:
            raise ValueError("the shard is closed")
        return self._fd

    def __init__(self, *args, **kwargs):
        pass

    def tensors(self, backend=None):
        """Returns {name: zero-copy, read-only view} of a .safetensors shard.

        ``backend``: ``torch`` (default when importable; torch.frombuffer on
        the mapping), ``numpy`` (the default without torch), or
        ``memoryview``. Each view keeps the mapping alive (see close()). The
        pages are mapped read-only: a write into a tensor kills the process
        (SIGSEGV); copy a tensor (``t.clone()``) to change it.
        """
        if self.closed or not self._leased:
            raise ValueError("the shard is closed")
        return _safetensors.views(self, backend)

    def verify(self):
        """client.verify(self.seal): raises VramsealError(integrity) when the memory changed."""
        return self._client.verify(self.seal)

    @property
    def leased(self):
        return self._leased

    def close(self):
        """Ends the lease, then unmaps (once no view of the mapping lives)."""
        try:
            if self._leased:
                self._leased = False
                self._client._end("close", self.shard_id)
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            try:
                super().close()
            except BufferError:
                pass  # views still live: unmapped when the last one goes

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return "<vramseal.Shard %s %d bytes%s>" % (self.shard_id, self.nbytes, "" if self._leased else " (lease ended)")


class Attachment:
    """Memory this process owns, sealed and re-verified in place by the agent.

    ``seal`` is the signed seal record of what the agent found (a dict);
    ``client.verify(attachment.seal)`` checks it now. Call ``detach()``
    before changing or freeing the memory: a change while attached is a
    CRITICAL verification failure, by design.
    """

    def __init__(self, client, shard_id, seal, memory):
        self._client = client
        self.shard_id = shard_id
        self.seal = seal
        self.memory = memory
        self._attached = True

    @property
    def attached(self):
        return self._attached

    def verify(self):
        return self._client.verify(self.seal)

    def detach(self):
        """Ends the attachment: the agent stops verifying and releases its seal."""
        if self._attached:
            self._attached = False
            self._client._end("detach", self.shard_id)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()

    def __repr__(self):
        return "<vramseal.Attachment %s%s>" % (self.shard_id, "" if self._attached else " (detached)")
