"""PyTorch models whose weights vramseal seals: loading and attaching.

The engine keeps loading its own weights, into memory vramseal can attach:
``load_model`` reads a .safetensors file once into a memfd sealed against
shrink and grow and points the model's parameters and buffers at tensors
built on that memfd (no copy). ``attach_model`` then registers the model's
memory with the agent once per storage segment (one memfd holds every
tensor of a file), never once per parameter. The same ``bind_model`` points
a model at the read-only tensors of a shard opened with ``Client.open``.

torch is imported when these functions are called, not before.
"""

import hashlib
import re

from . import memory as _memory, safetensors as _safetensors
from ._errors import VramsealError

#: Default cap on the segments attach_model attaches for one model.
DEFAULT_MAX_SEGMENTS = 16

_ID_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


def load_safetensors(path, *, sha256=None):
    """Reads a .safetensors file into a new sealed memfd.

    Returns (Memfd, {name: torch tensor}); the tensors are writable views of
    the memfd's mapping. ``sha256`` (hex): the file's expected plain
    SHA-256, checked now (VramsealError ``integrity`` on a mismatch) and
    pinned by attach_model, so the agent refuses memory that changed since.
    """
    m = _memory.memfd_from_file(path)
    try:
        if sha256 is not None:
            got = hashlib.sha256(m.mapping).hexdigest()
            if got != sha256.lower():
                raise VramsealError("integrity", "%s: sha256 %s, want %s" % (path, got, sha256))
            m.sha256 = got
        return m, _safetensors.views(m.mapping, "torch")
    except BaseException:
        m.close()
        raise


def bind_model(model, tensors, *, strict=True):
    """Points model's parameters and buffers at tensors ({state_dict name: tensor}), no copy.

    Shapes and dtypes must match the model's. With ``strict``, a name the
    model has and tensors lacks, or the reverse, is an error. Parameters
    come back with requires_grad False (these are inference weights).
    """
    import torch

    own = model.state_dict(keep_vars=True)
    if strict:
        missing = sorted(set(own) - set(tensors))
        extra = sorted(set(tensors) - set(own))
        if missing or extra:
            raise VramsealError("invalid", "the tensors do not fit the model: missing %s, unexpected %s" % (missing[:5], extra[:5]))
    for name, t in tensors.items():
        if name not in own:
            continue
        cur = own[name]
        if tuple(cur.shape) != tuple(t.shape) or cur.dtype != t.dtype:
            raise VramsealError("invalid", "%s: %s %s in the model, %s %s in the tensors" % (name, cur.dtype, tuple(cur.shape), t.dtype, tuple(t.shape)))
        mod_name, _, attr = name.rpartition(".")
        mod = model.get_submodule(mod_name) if mod_name else model
        if attr in mod._parameters:
            mod._parameters[attr] = torch.nn.Parameter(t, requires_grad=False)
        elif attr in mod._buffers:
            mod._buffers[attr] = t
        else:
            raise VramsealError("invalid", "%s is neither a parameter nor a buffer of the model" % name)
    return model


def load_model(model, path, *, sha256=None, strict=True):
    """Loads a .safetensors file into model so that attach_model can attach it.

    The file is read once into a sealed memfd and the model's parameters and
    buffers become views of it (bind_model). Returns the Memfd; the model
    also keeps a reference to it, so it lives as long as the model.
    """
    m, tensors = load_safetensors(path, sha256=sha256)
    try:
        bind_model(model, tensors, strict=strict)
    except BaseException:
        del tensors
        m.close()
        raise
    model.__dict__.setdefault("_vramseal_memory", []).append(m)
    return m


def _storage_span(t):
    s = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return s.data_ptr(), s.nbytes()


def segments_of(model):
    """Returns the memfds that hold model's storages, in address order.

    Raises VramsealError ``invalid`` when a storage lives outside every
    memfd this module created (load the model with load_model).
    """
    found, outside = {}, []
    named = list(model.named_parameters()) + list(model.named_buffers())
    for name, t in named:
        if t.device.type != "cpu":
            raise VramsealError("unsupported", "%s is on %s: attaching CUDA storages is not supported by this client yet" % (name, t.device))
        ptr, n = _storage_span(t)
        if n == 0:
            continue
        m = _memory.memfd_containing(ptr, n)
        if m is None:
            outside.append(name)
        else:
            found[m.address] = m
    if outside:
        raise VramsealError(
            "invalid",
            "%d of the model's tensors (%s) are not in memory vramseal can attach: load the model with vramseal.load_model"
            % (len(outside), ", ".join(outside[:3]) + (", …" if len(outside) > 3 else "")),
        )
    return [found[a] for a in sorted(found)]


class ModelAttachment:
    """The attachments of one model's segments (``attachments``, in order).

    ``detach()`` detaches them all; so does leaving a ``with`` block.
    """

    def __init__(self, attachments):
        self.attachments = list(attachments)

    @property
    def seals(self):
        return [a.seal for a in self.attachments]

    def verify(self):
        """Verifies every segment now; raises VramsealError ``integrity`` at the first that changed."""
        return [a.verify() for a in self.attachments]

    def detach(self):
        errors = []
        for a in self.attachments:
            try:
                a.detach()
            except VramsealError as e:
                errors.append(e)
        if errors:
            raise errors[0]

    def __len__(self):
        return len(self.attachments)

    def __iter__(self):
        return iter(self.attachments)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()


def attach_model(client, model, id_prefix, *, max_segments=DEFAULT_MAX_SEGMENTS, gpu=None, model_ref=None):
    """Attaches model's memory to the agent, one shard per storage segment.

    Shard ids are ``<id_prefix>-00000``, ``-00001``…, one per segment (a
    memfd holding the storages of many parameters). More than
    ``max_segments`` segments is refused before anything is attached. A
    segment loaded with a ``sha256`` is pinned to it. When one attach fails
    the ones already made are detached and the error is raised.
    """
    if not isinstance(id_prefix, str) or not id_prefix:
        raise ValueError("attach_model needs an id prefix")
    if not _ID_CHARS.match(id_prefix) or id_prefix.startswith(".") or ".." in id_prefix or len(id_prefix) > 250:
        raise ValueError("id prefix %r: at most 250 characters of [A-Za-z0-9._-], not starting with '.', no '..'" % id_prefix)
    if max_segments < 1:
        raise ValueError("max_segments must be at least 1")
    segs = segments_of(model)
    if not segs:
        raise VramsealError("invalid", "the model holds no memory to attach")
    if len(segs) > max_segments:
        raise VramsealError("too_many", "the model's storages are in %d segments, more than max_segments=%d" % (len(segs), max_segments))
    done = []
    try:
        for i, m in enumerate(segs):
            done.append(client.attach("%s-%05d" % (id_prefix, i), m, gpu=gpu, model_ref=model_ref, sha256=getattr(m, "sha256", None)))
    except BaseException:
        for a in done:
            try:
                a.detach()
            except VramsealError:
                pass
        raise
    return ModelAttachment(done)
