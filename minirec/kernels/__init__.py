"""The hot loops, one signature per recurrence, several implementations.

Each recurrence kernel (``"sru_forward"``, ``"sru_backward"``, ...) has a ``reference``
implementation: a plain NumPy loop over time, readable, array-agnostic, the truth every
faster one is tested against. Faster ones register under ``"cpu"`` (numba.njit) or ``"cuda"``
(numba.cuda) beside it. `get_kernel` picks by the arrays' backend and what is registered;
``MINIREC_KERNELS=reference`` forces the oracle everywhere.
"""

from __future__ import annotations

import importlib
import os
import warnings

import numpy as np

__all__ = ["register_kernel", "get_kernel", "kernel_names"]

_KERNELS: dict[str, dict[str, object]] = {}
KINDS = ("reference", "cpu", "cuda")


def register_kernel(name: str, kind: str = "reference"):
    """Decorator: file ``fn`` as the ``kind`` implementation of kernel ``name``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kernel kind {kind!r}; use one of {KINDS}")

    def decorate(fn):
        _KERNELS.setdefault(name, {})[kind] = fn
        return fn

    return decorate


def kernel_names() -> dict[str, list[str]]:
    """Every kernel and the kinds registered for it."""
    return {name: sorted(impls) for name, impls in _KERNELS.items()}


# The modules holding the fast implementations, imported on first use so that `import minirec`
# never pays for numba compilation or fails for lack of a GPU.
FAST_MODULES = {"cpu": "minirec.kernels.cpu", "cuda": "minirec.kernels.cuda"}
_loaded: dict[str, bool] = {}
_why_not: dict[str, str] = {}  # kind → why its module could not be imported


def load_kind(kind: str, warn: bool = True) -> bool:
    """Import the module of ``kind``'s kernels once; on failure warn once (when ``warn``: the
    caller falls back to the reference loops) and return False."""
    if kind not in _loaded:
        try:
            importlib.import_module(FAST_MODULES[kind])
            _loaded[kind] = True
        except ModuleNotFoundError as error:
            _loaded[kind] = False
            _why_not[kind] = str(error)
            # the module itself missing (a trimmed install) is not worth a warning; numba missing is
            module_missing = error.name == FAST_MODULES[kind]
            if warn and not module_missing:
                warnings.warn(f"minirec: {kind} kernels unavailable ({error}); using the reference loops",
                              RuntimeWarning, stacklevel=3)
        except Exception as error:  # e.g. numba-cuda present but CUDA unusable
            _loaded[kind] = False
            _why_not[kind] = f"{type(error).__name__}: {error}"
            if warn:
                warnings.warn(f"minirec: {kind} kernels unavailable ({_why_not[kind]}); using the reference loops",
                              RuntimeWarning, stacklevel=3)
    return _loaded[kind]


def check_kind(kind: str | None = None) -> str:
    """`kernel_mode`, and a forced kind that cannot run here is a RuntimeError saying why."""
    kind = kernel_mode(kind)
    if kind in ("cpu", "cuda") and not load_kind(kind, warn=False):
        raise RuntimeError(f"the {kind} kernels were asked for (MINIREC_KERNELS or kind) but cannot be loaded: "
                           f"{_why_not.get(kind, 'unknown reason')}")
    if kind == "cuda" and not _cuda_usable():  # (numba-cuda imports without a GPU, then fails at launch)
        raise RuntimeError("the cuda kernels were asked for (MINIREC_KERNELS or kind) but CUDA is not usable here "
                           "(numba.cuda.is_available() is False: no GPU or no driver); use MINIREC_KERNELS=cpu or "
                           "reference, or leave it unset")
    return kind


_CUDA_USABLE: list = []  # numba's answer, asked once per process


def _cuda_usable() -> bool:
    """numba sees a GPU (or its simulator)."""
    if not _CUDA_USABLE:
        try:
            from numba import cuda

            _CUDA_USABLE.append(bool(cuda.is_available()))
        except Exception:
            _CUDA_USABLE.append(False)
    return _CUDA_USABLE[0]


def kernel_mode(kind: str | None = None) -> str:
    """``kind``, else $MINIREC_KERNELS, else "auto"; anything but auto/reference/cpu/cuda is an error."""
    value = kind or os.environ.get("MINIREC_KERNELS") or "auto"
    mode = value.strip().lower()
    if mode not in ("auto", *KINDS):
        source = "kind" if kind else "MINIREC_KERNELS"
        raise ValueError(f"{source}={value!r}: use one of auto, {', '.join(KINDS)}")
    return mode


def get_kernel(name: str, xp=np, kind: str | None = None):
    """The implementation of ``name`` to use for arrays of namespace ``xp``.

    ``kind`` (or the environment variable MINIREC_KERNELS) may force one: reference, cpu, cuda.
    """
    try:
        impls = _KERNELS[name]
    except KeyError:
        raise KeyError(f"no kernel named {name!r}; known: {', '.join(sorted(_KERNELS))}") from None
    kind = check_kind(kind)
    if kind != "auto":
        if kind not in impls:
            raise KeyError(f"kernel {name!r} has no {kind!r} implementation (has: {', '.join(sorted(impls))})")
        return impls[kind]
    preferred = "cpu" if xp is np else "cuda"
    if preferred not in impls and load_kind(preferred):
        impls = _KERNELS[name]
    return impls.get(preferred, impls["reference"])
