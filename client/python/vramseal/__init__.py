"""vramseal: the consumer client of the vramseal agent (docs/consumers.md).

Open a sealed shard and compute with its very memory, which the agent
re-verifies while you hold it; or attach memory you own so the agent seals
and re-verifies it in place. Standard library only; torch and numpy are
used when present.

    import vramseal
    with vramseal.Client() as c, c.open("llama-00001") as shard:
        c.verify(shard.seal)
        tensors = shard.tensors()
"""

from ._cuda import CudaShard
from ._errors import VramsealError
from .client import DEFAULT_SOCKET, SOCKET_ENV, Attachment, Client, Shard
from .memory import Memfd, memfd_from_bytes, memfd_from_file
from .models import ModelAttachment, attach_model, bind_model, load_model, load_safetensors

__all__ = [
    "Attachment",
    "Client",
    "CudaShard",
    "DEFAULT_SOCKET",
    "Memfd",
    "ModelAttachment",
    "SOCKET_ENV",
    "Shard",
    "VramsealError",
    "attach_model",
    "bind_model",
    "load_model",
    "load_safetensors",
    "memfd_from_bytes",
    "memfd_from_file",
]
