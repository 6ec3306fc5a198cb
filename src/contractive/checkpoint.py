"""Training checkpoints: one safetensors file, written atomically, with a checksum.

A checkpoint holds a ``Trainer.state_dict()`` (module, optimizer, random generators, epoch,
history, early-stopping state) plus caller metadata. Nested state is flattened: every tensor
is stored under its path (``optimizer/state/0/exp_avg``) and the rest of the structure goes
to JSON in the file's metadata, with ``{"__tensor__": path}`` where a tensor was. The
metadata also carries the SHA-256 of the JSON and of every tensor's bytes, so a truncated
or corrupted checkpoint is reported, never loaded; the file is written to a temporary name,
flushed and renamed, so a crash (even ``kill -9``) leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .io import atomic_write_bytes

FORMAT = "contractive.checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.safetensors"
_TENSOR = "__tensor__"
_FLOAT = "__float__"


def _flatten(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().cpu().contiguous().clone()
        return {_TENSOR: prefix}
    if isinstance(obj, dict):
        return {"__dict__": [[_flatten(k, f"{prefix}/k{i}", tensors),
                              _flatten(v, f"{prefix}/{i}", tensors)]
                             for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if isinstance(obj, float) and not math.isfinite(obj):
        return {_FLOAT: repr(obj)}  # inf / nan, which JSON cannot hold
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {prefix}")


def _unflatten(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if _TENSOR in obj:
            return tensors[obj[_TENSOR]]
        if _FLOAT in obj:
            return float(obj[_FLOAT])
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {_unflatten(k, tensors): _unflatten(v, tensors) for k, v in obj["__dict__"]}
    return obj


def _digest(structure: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(structure.encode())
    for key in sorted(tensors):
        t = tensors[key]
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | os.PathLike, state: dict, metadata: dict | None = None) -> None:
    """Write ``state`` (and JSON-able ``metadata``) to ``path`` atomically."""
    tensors: dict[str, torch.Tensor] = {}
    structure = json.dumps(
        {"state": _flatten(state, "s", tensors), "metadata": metadata or {}}, allow_nan=False
    )
    meta = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "structure": structure,
        "sha256": _digest(structure, tensors),
    }
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """Read a checkpoint: ``(state, metadata)``; ``ValueError`` if it is damaged or foreign."""
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read checkpoint ({exc})") from None
    try:
        tensors = st_load(blob)
        header_len = int.from_bytes(blob[:8], "little")
        meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise ValueError(
            f"{path}: checkpoint is truncated or corrupted ({exc}); delete it to start afresh"
        ) from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a contractive checkpoint")
    version = meta.get("format_version", "")
    if not version.isdigit() or not 1 <= int(version) <= FORMAT_VERSION:
        raise ValueError(
            f"{path}: checkpoint format_version {version!r} is not supported (reads 1 to "
            f"{FORMAT_VERSION}); the file is damaged or from a newer contractive"
        )
    structure = meta.get("structure", "")
    if _digest(structure, tensors) != meta.get("sha256"):
        raise ValueError(
            f"{path}: checkpoint checksum mismatch: the file is corrupted; delete it to start "
            "afresh"
        )
    tree = json.loads(structure)
    return _unflatten(tree["state"], tensors), tree["metadata"]
