"""Array backends: NumPy on the CPU, CuPy on the GPU.

Everything above `minirec.kernels` is written once against an array namespace ``xp``.
This module answers the few questions that code has to ask about its arrays:

* which namespace a set of arrays belongs to (`get_xp`), refusing to mix them;
* what the default floating dtype is (float32; gradient checks use float64);
* how to move an array to a device (`to_device`), and whether CUDA is usable at all
  (`cuda_available`, which never raises, even on a machine without a driver);
* which random generator to draw from (`manual_seed`, `rng`).
"""

from __future__ import annotations

import functools
import operator
import os

import numpy as np

__all__ = [
    "BackendError",
    "get_xp",
    "is_cupy_array",
    "cuda_available",
    "get_default_dtype",
    "set_default_dtype",
    "to_device",
    "device_of",
    "to_numpy",
    "manual_seed",
    "rng",
    "scatter_add",
]


class BackendError(TypeError):
    """Arrays from different backends were mixed, or a backend is not usable."""


_DEFAULT_DTYPE = np.dtype(np.float32)


def get_default_dtype() -> np.dtype:
    """The floating dtype new tensors and parameters get (float32 unless changed)."""
    return _DEFAULT_DTYPE


def set_default_dtype(dtype) -> None:
    global _DEFAULT_DTYPE
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"default dtype must be a floating dtype, got {dtype}")
    _DEFAULT_DTYPE = dtype


@functools.cache
def _cupy():
    """The cupy module, or None when it is not importable (never raises)."""
    if os.environ.get("MINIREC_DISABLE_CUPY"):
        return None
    try:
        import cupy
    except Exception:  # ImportError, or a CUDA library that fails to load
        return None
    return cupy


def is_cupy_array(array) -> bool:
    cp = _cupy()
    return cp is not None and isinstance(array, cp.ndarray)


def _backend_name(array) -> str:
    return "cupy" if is_cupy_array(array) else "numpy"


def get_xp(*arrays):
    """The array namespace shared by ``arrays`` (NumPy or CuPy).

    Python scalars and None are ignored. Mixing NumPy and CuPy arrays is an error that
    names both, because a silent host/device copy would hide a bug (or a slow path).
    """
    found = None
    found_array = None
    for array in arrays:
        if array is None or isinstance(array, (int, float, bool, np.generic)):
            continue
        name = _backend_name(array)
        if found is None:
            found, found_array = name, array
        elif name != found:
            raise BackendError(
                f"mixed array backends: a {found} array of shape {tuple(found_array.shape)} "
                f"and a {name} array of shape {tuple(array.shape)}; move both to one device first"
            )
    if found == "cupy":
        return _cupy()
    return np


@functools.cache
def cuda_available() -> bool:
    """True when the CUDA kernels can run: numpy < 2.5, CuPy, a GPU and driver, numba-cuda, NVVM and
    NVRTC, and one tiny kernel compiled and launched (`minirec.kernels.preflight`; computed once per
    process; `minirec info` says which check failed). Never raises."""
    try:
        from minirec.kernels.preflight import cuda_ready

        return cuda_ready()
    except Exception:
        return False


def _normalise_device(device: str) -> str:
    device = str(device).lower()
    if device in ("cpu", "numpy"):
        return "cpu"
    if device in ("gpu", "cuda", "cupy") or device.startswith("cuda:"):
        return "gpu"
    raise ValueError(f"unknown device {device!r}; use 'cpu' or 'gpu'")


def device_of(array) -> str:
    return "gpu" if is_cupy_array(array) else "cpu"


def to_device(array, device: str):
    """Copy ``array`` to ``device`` ('cpu' or 'gpu'); returns it unchanged if already there."""
    device = _normalise_device(device)
    if device == "cpu":
        return to_numpy(array)
    if not cuda_available():
        raise BackendError("device 'gpu' requested but CUDA is not usable here (no CuPy or no GPU)")
    return _cupy().asarray(array)


def to_numpy(array):
    """A NumPy array of a NumPy or CuPy array (for saving, printing and comparing): a copy from
    the GPU, the same array on the CPU (copy it before changing it)."""
    if is_cupy_array(array):
        return array.get()
    return np.asarray(array)


_SEED = 0
_RNGS: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    """Seed every generator minirec draws from (parameter init, dropout), on every backend."""
    global _SEED
    seed = operator.index(seed)  # 2.7 is not a seed (int() would make it 2)
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    _SEED = seed
    _RNGS.clear()


def rng(xp=np):
    """The generator for backend ``xp``: a `numpy.random.Generator` or CuPy's equivalent."""
    name = "cupy" if xp is not np else "numpy"
    if name not in _RNGS:
        _RNGS[name] = np.random.default_rng(_SEED) if xp is np else xp.random.default_rng(_SEED)
    return _RNGS[name]


def scatter_add(xp, target, indices, values) -> None:
    """target[indices] += values, accumulating repeated indices (the backward of a gather)."""
    if xp is np:
        np.add.at(target, indices, values)
    else:
        import cupyx

        cupyx.scatter_add(target, indices, values)
