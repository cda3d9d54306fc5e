"""A real PyTorch consumer of the agent, run by TestPythonConsumer.

It saves a small model as .safetensors (the format written here: no
safetensors package), has the agent seal it, opens it through the Python
client and computes with the shard's own memory; then it loads the same file
into memory it owns, attaches that, and changes it, as an owner must not.
Each step prints a line; any failed check exits with status 1.

Environment: VRAMSEAL_TEST_AGENT, VRAMSEAL_TEST_CONTROL_SOCKET,
VRAMSEAL_TEST_HANDOFF_SOCKET, VRAMSEAL_TEST_MODEL_DIR (see the Go test).
"""

import ctypes
import hashlib
import json
import os
import struct
import subprocess
import sys

import torch

import vramseal

AGENT = os.environ["VRAMSEAL_TEST_AGENT"]
CONTROL = os.environ["VRAMSEAL_TEST_CONTROL_SOCKET"]
HANDOFF = os.environ["VRAMSEAL_TEST_HANDOFF_SOCKET"]
MODELS = os.environ["VRAMSEAL_TEST_MODEL_DIR"]

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.int64: "I64"}


def check(cond, what):
    if not cond:
        print("FAIL", what, flush=True)
        sys.exit(1)
    print("ok  ", what, flush=True)


def cli(*args):
    p = subprocess.run([AGENT, *args, "--control.socket", CONTROL], capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        print("FAIL vramseal-agent %s: exit %d\n%s%s" % (" ".join(args), p.returncode, p.stdout, p.stderr), flush=True)
        sys.exit(1)
    return p.stdout


def save_safetensors(state_dict, path):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in state_dict.items():
        t = t.detach().contiguous()
        raw = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def load_reference(path):
    """The same file loaded as any engine would: read, parsed, copied."""
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__", None)
    rev = {v: k for k, v in DTYPES.items()}
    out = {}
    for name, d in header.items():
        a, b = d["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[8 + n + a:8 + n + b]), dtype=rev[d["dtype"]]).reshape(d["shape"])
    return out


def build():
    return torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.BatchNorm1d(64), torch.nn.GELU(), torch.nn.Linear(64, 64),
        torch.nn.LayerNorm(64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    ).eval()


def main():
    torch.manual_seed(14)
    trained = build()
    with torch.no_grad():  # running statistics other than the defaults
        trained[1].running_mean.uniform_(-1, 1)
        trained[1].running_var.uniform_(0.5, 2)
        trained[1].num_batches_tracked.fill_(7)
    path = os.path.join(MODELS, "tiny.safetensors")
    save_safetensors(trained.state_dict(), path)
    with open(path, "rb") as f:
        file_sha = hashlib.sha256(f.read()).hexdigest()

    reference = build()
    reference.load_state_dict(load_reference(path))
    x = torch.randn(8, 32)
    with torch.no_grad():
        want = reference(x)

    cli("seal", path, "--id", "tiny", "--gpu", "0", "--model-ref", "tiny@e2e")
    client = vramseal.Client(HANDOFF)

    # --- hand-off: compute with the sealed shard's own memory -----------
    shard = client.open("tiny")
    check(shard.seal["content_sha256"] == file_sha, "the shard's seal names the file's sha256")
    check(client.verify(shard.seal)["result"] == "ok", "verify-before-use: the seal holds")
    tensors = shard.tensors()
    lo, hi = shard.address, shard.address + shard.nbytes
    check(set(tensors) == set(trained.state_dict()), "the shard holds every tensor of the model")
    check(all(lo <= t.data_ptr() and t.data_ptr() + t.numel() * t.element_size() <= hi for t in tensors.values()),
          "every tensor is a view into the shared mapping (data_ptr inside it)")
    model = vramseal.bind_model(build(), tensors)
    check(all(lo <= p.data_ptr() < hi for p in model.state_dict().values()), "the model's weights are the shard's memory")
    with torch.no_grad():
        got = model(x)
    check(torch.equal(got, want), "a forward pass on the shard equals the model loaded from the file")

    w = tensors["0.weight"]
    off = w.data_ptr() - lo  # w[0, 0]: its last byte holds the sign and the exponent's top bits
    before = struct.pack("<f", w[0, 0].item())
    cli("debug", "corrupt", "tiny", "--offset", str(off + 3), "--bit", "6")
    flipped = struct.unpack("<f", before[:3] + bytes([before[3] ^ 0x40]))[0]
    check(w[0, 0].item() == flipped, "a debug corrupt shows in the tensor (%r -> %r)" % (struct.unpack("<f", before)[0], flipped))
    with torch.no_grad():
        check(not torch.equal(model(x), want), "and in the forward pass")
    try:
        client.verify(shard.seal)
        check(False, "verify fails after the corruption")
    except vramseal.VramsealError as e:
        check(e.kind == "integrity" and e.result["result"] == "digest_mismatch", "verify fails after the corruption: %s" % e)
    del model, tensors, w
    shard.close()

    # --- attach: memory the engine owns, sealed and verified in place ---
    owned = build()
    mem = vramseal.load_model(owned, path, sha256=file_sha)
    check(all(mem.address <= p.data_ptr() < mem.address + mem.nbytes for p in owned.state_dict().values()),
          "load_model built the model's weights on a sealed memfd")
    with torch.no_grad():
        check(torch.equal(owned(x), want), "a forward pass on the owned memfd equals the model loaded from the file")
    att = vramseal.attach_model(client, owned, "tinyown", model_ref="tiny@e2e")
    check(len(att) == 1 and att.seals[0]["shard_id"] == "tinyown-00000", "the model is attached as one segment")
    check(att.seals[0]["content_sha256"] == file_sha, "the agent found the file's bytes in the owner's memory")
    listed = {s["seal"]["shard_id"]: s for s in json.loads(cli("list", "-o", "json"))["shards"]}
    check(listed.get("tinyown-00000", {}).get("origin") == "attached", "list shows the attached shard, origin attached")
    check(att.verify()[0]["result"] == "ok", "the attached memory verifies")
    with torch.no_grad():
        owned[3].weight[0, 0] += 1.0  # the owner changes its memory while attached
    try:
        att.verify()
        check(False, "verify of the changed memory fails")
    except vramseal.VramsealError as e:
        check(e.kind == "integrity" and e.result["result"] == "digest_mismatch", "verify of the changed memory fails: %s" % e)
    print("DONE", flush=True)
    # Exiting ends the connection: the agent releases tinyown-00000 (owner_exited).


if __name__ == "__main__":
    main()
