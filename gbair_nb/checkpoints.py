"""A checkpoint file: the trainable tensors of one moment of training, with the learning rates in force then.

:func:`gbair_nb.train.train` saves each checkpoint as ``checkpoints/ckpt_NN.safetensors``: the tensors, with the
learning rates, the epoch, the step and the data fingerprint as metadata. safetensors holds tensors and strings only,
so reading a checkpoint can never run code (a pickled ``.pt`` file can). Older runs have ``ckpt_NN.pt``: they are
read with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain values. Reading a whole run
folder back, checked, is :mod:`gbair_nb.runs`.
"""
from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

from .files import write_atomic

__all__ = ["RunFolderError", "TRAIN_FILES", "RETRAIN", "save_checkpoint", "read_checkpoint", "read_state",
           "checkpoint_digest"]

# What train() owns in its output folder (glob patterns): a new training into the folder replaces exactly these.
TRAIN_FILES = ("run.json", "timing.json", "checkpoints/ckpt_*")
RETRAIN = "restore it, or train again into an empty folder (python -m gbair_nb train --out DIR)"
_FIX = RETRAIN


class RunFolderError(ValueError):
    """A run folder that is incomplete, damaged, edited, or not what its record says."""


def checkpoint_digest(state, meta: dict) -> str:
    """sha256 (16 hex digits) over the metadata and every tensor's name, dtype, shape and bytes.

    Computed from content, not file bytes (safetensors may order its header differently from one process to the
    next), so the same run gives the same digest; ``run.json`` keeps it, and a checkpoint from any other run fails.
    """
    import torch

    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def save_checkpoint(path: str | Path, state, *, lr: float, lrs: dict, epoch: int, step: int,
                    fingerprint: str) -> str:
    """Write ``state`` (name → tensor) and its metadata as one safetensors file, atomically; returns its digest."""
    from safetensors.torch import save

    meta = {"names": list(state), "lr": float(lr), "lrs": {k: float(v) for k, v in lrs.items()},
            "epoch": int(epoch), "step": int(step), "fingerprint": fingerprint}
    tensors = {n: t.detach().to("cpu").contiguous() for n, t in state.items()}
    # safetensors metadata is strings: the fingerprint as it is, numbers and the name lists as JSON
    write_atomic(path, save(tensors, metadata={k: v if k == "fingerprint" else json.dumps(v) for k, v in meta.items()}))
    return checkpoint_digest(tensors, meta)


def read_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file of :func:`gbair_nb.train.train` without running any code from it.

    Returns ``{"state": OrderedDict name → tensor, "lr", "lrs", "epoch", "step", "fingerprint", "digest"}``;
    a ``.safetensors`` file, or a ``.pt`` of an older run (``weights_only=True``: tensors and plain values only).
    """
    path = Path(path)
    state, meta = _load_tensors(path)
    try:
        meta = {"names": list(state), "lr": float(meta["lr"]), "lrs": {k: float(v) for k, v in meta["lrs"].items()},
                "epoch": int(meta["epoch"]), "step": int(meta["step"]), "fingerprint": str(meta["fingerprint"])}
    except Exception as e:
        raise _unreadable(path, e) from None
    return {"state": state, **{k: v for k, v in meta.items() if k != "names"}, "digest": checkpoint_digest(state, meta)}


def read_state(path: str | Path) -> "OrderedDict":
    """The tensors (name → tensor) of a checkpoint file: ours, or any safetensors file or ``torch.save``-d dict
    of tensors. Never unpickles code: ``.pt`` files are read with ``weights_only=True``."""
    return _load_tensors(Path(path))[0]


def _unreadable(path: Path, e: Exception) -> RunFolderError:
    reason = " ".join(str(e).split())[:160] or type(e).__name__
    return RunFolderError(f"checkpoint {path} cannot be read ({reason}): it is truncated, damaged or not written by "
                          f"gbair_nb; {_FIX}")


def _load_tensors(path: Path) -> tuple["OrderedDict", dict]:
    """(state, metadata) of a ``.safetensors`` or ``.pt`` file; any failure is one :class:`RunFolderError`."""
    if not path.is_file():
        raise RunFolderError(f"checkpoint {path} is missing; {_FIX}")
    if path.suffix not in (".safetensors", ".pt"):
        raise RunFolderError(f"{path} is not a checkpoint file (.safetensors, or .pt from an older run)")
    try:
        return _read_safetensors(path) if path.suffix == ".safetensors" else _read_pt(path)
    except RunFolderError:
        raise
    except Exception as e:  # any failure to parse is a damaged file; say which, in one line
        raise _unreadable(path, e) from None


def _read_safetensors(path: Path) -> tuple["OrderedDict", dict]:
    from safetensors.torch import load

    data = path.read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    meta = {k: v if k == "fingerprint" else json.loads(v) for k, v in (header.get("__metadata__") or {}).items()}
    tensors = load(data)
    names = meta.get("names", sorted(tensors))
    if sorted(names) != sorted(tensors):
        raise ValueError("the tensor names do not match the file's own list")
    return OrderedDict((n, tensors[n]) for n in names), meta


def _read_pt(path: Path) -> tuple["OrderedDict", dict]:
    import pickle

    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunFolderError(f"checkpoint {path} holds objects other than tensors and plain values: it is refused, "
                             "because loading it could run code; train again (new runs save .safetensors)") from None
    if isinstance(blob, dict) and isinstance(blob.get("state"), dict):  # train()'s format before safetensors
        return OrderedDict(blob["state"]), {k: v for k, v in blob.items() if k != "state"}
    if isinstance(blob, dict) and all(isinstance(v, torch.Tensor) for v in blob.values()):  # a bare state dict
        return OrderedDict(blob), {}
    raise ValueError("neither a checkpoint of gbair_nb nor a dict of tensors")


