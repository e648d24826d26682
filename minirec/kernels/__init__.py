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


def load_kind(kind: str) -> bool:
    """Import the module of ``kind``'s kernels once; on failure warn once and fall back."""
    if kind not in _loaded:
        try:
            importlib.import_module(FAST_MODULES[kind])
            _loaded[kind] = True
        except ModuleNotFoundError as error:
            if error.name != FAST_MODULES[kind]:  # a dependency (numba) is missing, not the module
                warnings.warn(f"minirec: {kind} kernels unavailable ({error}); using the reference loops",
                              RuntimeWarning, stacklevel=3)
            _loaded[kind] = False
        except Exception as error:  # e.g. numba-cuda present but CUDA unusable
            warnings.warn(f"minirec: {kind} kernels unavailable ({type(error).__name__}: {error}); "
                          "using the reference loops", RuntimeWarning, stacklevel=3)
            _loaded[kind] = False
    return _loaded[kind]


def get_kernel(name: str, xp=np, kind: str | None = None):
    """The implementation of ``name`` to use for arrays of namespace ``xp``.

    ``kind`` (or the environment variable MINIREC_KERNELS) may force one: reference, cpu, cuda.
    """
    try:
        impls = _KERNELS[name]
    except KeyError:
        raise KeyError(f"no kernel named {name!r}; known: {', '.join(sorted(_KERNELS))}") from None
    kind = kind or os.environ.get("MINIREC_KERNELS", "auto")
    if kind != "auto":
        if kind != "reference":
            load_kind(kind)
        if kind not in impls:
            raise KeyError(f"kernel {name!r} has no {kind!r} implementation (has: {', '.join(sorted(impls))})")
        return impls[kind]
    preferred = "cpu" if xp is np else "cuda"
    if preferred not in impls and load_kind(preferred):
        impls = _KERNELS[name]
    return impls.get(preferred, impls["reference"])
