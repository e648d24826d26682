"""Checkpoints: one .npz file, written atomically (temporary file, then ``os.replace``).

Inside the archive:

* ``model/<name>``: every parameter (`Module.state_dict`);
* ``optimizer/<key>``: the optimiser's state dict (lr, step count, moment buffers);
* ``extra/<key>``: any other arrays (e.g. the carried hidden state of a language model);
* ``meta``: a JSON string (a 0-d unicode array, so loading needs no pickle) holding the epoch,
  the position inside it, the random generators' states, the best metric, the history so far
  and the configuration.

A crash while writing leaves the previous checkpoint whole: the new one only replaces it once
it is completely on disk.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minirec import backend
from minirec.autograd.function import Tensor
from minirec.nn.module import load_npz, save_npz_atomic

__all__ = [
    "Checkpoint", "save_checkpoint", "load_checkpoint", "flatten_state", "unflatten_state", "write_json_atomic",
    "atomic_write", "FORMAT_VERSION",
]

FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: dict
    optimizer: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def save_checkpoint(path, model_state: dict, optimizer_state: dict | None = None, meta: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint atomically; returns its path."""
    arrays = {f"model/{k}": np.asarray(v) for k, v in model_state.items()}
    for k, v in (optimizer_state or {}).items():
        arrays[f"optimizer/{k}"] = np.asarray(backend.to_numpy(v) if hasattr(v, "shape") else v)
    for k, v in (extra or {}).items():
        arrays[f"extra/{k}"] = np.asarray(backend.to_numpy(v))
    arrays["meta"] = np.array(json.dumps({"format": FORMAT_VERSION, **(meta or {})}))
    save_npz_atomic(path, arrays)
    return Path(path)


def load_checkpoint(path) -> Checkpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    parts = {"model": {}, "optimizer": {}, "extra": {}}
    arrays = load_npz(path)
    try:
        meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: its metadata is not JSON ({error})") from error
    for key, value in arrays.items():
        group, _, name = key.partition("/")
        if group not in parts:
            raise ValueError(f"{path}: unexpected entry {key!r} in a checkpoint")
        parts[group][name] = value
    return Checkpoint(parts["model"], parts["optimizer"], parts["extra"], meta)


def flatten_state(state, prefix: str = "state"):
    """A recurrent state (nested lists/tuples of Tensors, or None) as (JSON structure, arrays)."""
    arrays = {}

    def encode(node, name):
        if node is None:
            return None
        if isinstance(node, Tensor):
            arrays[name] = backend.to_numpy(node.data)
            return {"tensor": name}
        if isinstance(node, (list, tuple)):
            kind = "list" if isinstance(node, list) else "tuple"
            return {kind: [encode(child, f"{name}.{i}") for i, child in enumerate(node)]}
        raise TypeError(f"cannot save a state of type {type(node).__name__}")

    return encode(state, prefix), arrays


def unflatten_state(structure, arrays: dict, device: str = "cpu"):
    """The inverse of `flatten_state`: Tensors on ``device``."""
    if structure is None:
        return None
    if "tensor" in structure:
        return Tensor(backend.to_device(arrays[structure["tensor"]], device))
    if "list" in structure:
        return [unflatten_state(s, arrays, device) for s in structure["list"]]
    return tuple(unflatten_state(s, arrays, device) for s in structure["tuple"])


def write_json_atomic(path, data) -> Path:
    """json.dump to a temporary file beside ``path``, then rename it into place. Strict JSON: a
    NaN or infinite number (an overflowed perplexity) is written as null, which every JSON
    reader accepts (Python's NaN/Infinity tokens are not JSON)."""
    with atomic_write(path, "w") as f:
        json.dump(_finite_or_null(data), f, indent=2, sort_keys=False, allow_nan=False)
        f.write("\n")
    return Path(path)


def _finite_or_null(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite_or_null(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_null(v) for v in value]
    return value


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a new file beside ``path`` for writing; on success rename it to ``path`` (atomic),
    on failure delete it. Unlike ``tempfile.mkstemp`` the file gets the usual permissions (umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode.replace("w", "x"), **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
