"""`Module` and `Parameter`: parameter discovery, train/eval, state dicts, device moves.

A Module finds its parameters by looking at its attributes: a `Parameter`, a `Module`, or a
list/tuple of Modules (named by position). No registration calls are needed.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from minirec import backend
from minirec.autograd.function import Tensor

__all__ = ["Parameter", "Module", "ModuleList", "StateDictError", "save_npz_atomic"]


class StateDictError(KeyError):
    """A state dict that does not fit the module; the message lists every mismatch."""

    def __str__(self):
        return str(self.args[0])


class Parameter(Tensor):
    """A leaf Tensor that a Module owns and an optimiser updates."""

    def __init__(self, data, requires_grad: bool = True):
        super().__init__(data, requires_grad=requires_grad)


class Module:
    training = True

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ---- discovery ---------------------------------------------------------------------------
    def named_children(self):
        for name, value in vars(self).items():
            if isinstance(value, Module):
                yield name, value
            elif isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
                for i, v in enumerate(value):
                    yield f"{name}.{i}", v
            elif _holds_parts(value):  # would be skipped: never trained, saved or put in eval mode
                raise TypeError(
                    f"{type(self).__name__}.{name}: a {type(value).__name__} holding Modules or Parameters that "
                    "discovery cannot see; use a Module, a Parameter, or a list/tuple of Modules only"
                )

    def named_parameters(self, prefix: str = ""):
        """(dotted name, Parameter) for this module and every submodule, each once."""
        seen = set()
        for name, value in vars(self).items():
            if isinstance(value, Parameter) and id(value) not in seen:
                seen.add(id(value))
                yield prefix + name, value
        for name, child in self.named_children():
            for sub_name, p in child.named_parameters(prefix + name + "."):
                if id(p) not in seen:  # tied weights appear once
                    seen.add(id(p))
                    yield sub_name, p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def count_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    # ---- modes and devices -------------------------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    def to(self, device: str):
        """Move every parameter to ``device`` ('cpu' or 'gpu') in place; returns self."""
        for p in self.parameters():
            p.data = backend.to_device(p.data, device)
            if p.grad is not None:
                p.grad = backend.to_device(p.grad, device)
        return self

    @property
    def device(self) -> str:
        params = self.parameters()
        return params[0].device if params else "cpu"

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Name → NumPy copy of each parameter."""
        return {name: backend.to_numpy(p.data).copy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict, strict: bool = True):
        """Copy ``state`` into the parameters (keeping their device and dtype).

        Missing keys, unexpected keys and wrong shapes are all reported in one error.
        """
        own = dict(self.named_parameters())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        wrong = sorted(
            f"{k}: checkpoint {tuple(np.shape(state[k]))} vs model {own[k].shape}"
            for k in set(own) & set(state)
            if tuple(np.shape(state[k])) != own[k].shape
        )
        dtypes = {k: getattr(state[k], "dtype", None) or np.asarray(state[k]).dtype for k in set(own) & set(state)}
        # strings, booleans and complex numbers would convert silently (complex ones losing half)
        not_float = sorted(f"{k}: {dtype}" for k, dtype in dtypes.items() if dtype.kind != "f")
        # NaN or inf weights make every output NaN: refuse them here, where the file is named
        bad_counts = {k: int((~np.isfinite(backend.to_numpy(state[k]))).sum())
                      for k in set(own) & set(state) if dtypes[k].kind == "f"}
        not_finite = sorted(f"{k}: {n} of {np.size(state[k])}" for k, n in bad_counts.items() if n)
        problems = []
        if wrong:
            problems.append("wrong shapes: " + "; ".join(wrong))
        if not_float:
            problems.append("not floating point: " + "; ".join(not_float))
        if not_finite:
            problems.append("NaN or inf entries: " + "; ".join(not_finite))
        if strict and missing:
            problems.append("missing keys: " + ", ".join(missing))
        if strict and unexpected:
            problems.append("unexpected keys: " + ", ".join(unexpected))
        if problems:
            raise StateDictError(f"load_state_dict for {type(self).__name__}: " + " | ".join(problems))
        for name, p in own.items():
            if name in state:
                p.data = backend.get_xp(p.data).array(state[name], dtype=p.dtype)  # a copy
        return self

    def save(self, path):
        """Write the state dict as an .npz file, atomically."""
        save_npz_atomic(path, self.state_dict())

    def load(self, path, strict: bool = True):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no checkpoint at {path}")
        return self.load_state_dict(load_npz(path), strict=strict)

    def __repr__(self):
        children = "".join(f"\n  ({n}): " + repr(c).replace("\n", "\n  ") for n, c in self.named_children())
        return f"{type(self).__name__}({self.extra_repr()}{children}{chr(10) if children else ''})"

    def extra_repr(self) -> str:
        return ""


def _holds_parts(value) -> bool:
    """A container with a Module or Parameter inside that is not a plain list/tuple of Modules."""
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, (list, tuple)):
        return False
    return any(isinstance(v, (Module, Parameter)) or _holds_parts(v) for v in value)


class ModuleList(Module):
    """An indexable list of submodules (named 0, 1, …)."""

    def __init__(self, modules=()):
        self.items = list(modules)

    def named_children(self):
        for i, m in enumerate(self.items):
            yield str(i), m

    def __getitem__(self, i):
        return self.items[i]

    def __len__(self):
        return len(self.items)

    def __iter__(self):
        return iter(self.items)

    def append(self, module):
        self.items.append(module)


def load_npz(path) -> dict:
    """The arrays of an .npz file written by `save_npz_atomic`, as a dict; a file that is not
    one raises ValueError naming it."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive")
        with archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise ValueError(f"{path} is not a readable minirec .npz file ({type(error).__name__}: {error})") from error


def save_npz_atomic(path, arrays: dict):
    """np.savez to a temporary file in the same folder, then rename: never a half-written file.
    Object arrays are refused before anything is written: they would be pickled, and the
    loaders (allow_pickle=False) could not read the file that replaced a good one."""
    path = Path(path)
    pickled = sorted(key for key, value in arrays.items() if np.asarray(value).dtype.hasobject)
    if pickled:
        raise TypeError(f"cannot save {path}: {pickled} would be pickled (object arrays); save plain numbers")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint gets ordinary file permissions
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
