"""Can this machine run minirec's CUDA kernels? Each thing a first launch needs, checked in order.

`cuda_checks` tries, one after the other, what a GPU run depends on, and stops at the first that
fails, so the report names exactly what is missing instead of looking fine until the first
kernel launch:

1. **numpy** below 2.5 (numba-cuda calls ``np.row_stack``, gone in NumPy 2.5);
2. **cupy** imports (the ``cuda12``/``cuda13`` extras install the one for the driver's CUDA major);
3. **driver**: a GPU is visible and the driver is at least as new as the CUDA CuPy was built for;
4. **numba-cuda**: the package, not numba's deprecated built-in ``numba.cuda`` (which predates
   CUDA 13), at version 0.19 or later;
5. **NVVM** (libNVVM: compiles the kernels' LLVM IR to PTX) and 6. **NVRTC** (numba-cuda needs it
   to compile for the device): both come with ``numba-cuda[cu12]`` / ``numba-cuda[cu13]``;
7. **launch**: one tiny kernel compiled, launched on a CuPy array on CuPy's stream, its result
   read back and checked.

The result is computed once per process (`cuda_ready` is what `minirec.cuda_available` returns);
`cuda_checks(refresh=True)` runs them again. Nothing here raises: a failure is a failed check.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass

__all__ = ["Check", "cuda_checks", "cuda_ready", "describe"]

INSTALL = "pip install -e '.[cuda13]' (or '.[cuda12]': nvidia-smi shows the CUDA version the driver supports)"
MIN_NUMBA_CUDA = (0, 19)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _error(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def _check_numpy():
    import numpy as np

    if _version_tuple(np.__version__) >= (2, 5):
        return False, f"numpy {np.__version__}: numba-cuda needs numpy < 2.5 (np.row_stack); pip install 'numpy<2.5'"
    return True, np.__version__


def _check_cupy():
    if importlib.util.find_spec("cupy") is None:
        return False, f"CuPy is not installed: {INSTALL}"
    try:
        cp = importlib.import_module("cupy")
    except Exception as error:  # e.g. two CuPy wheels for different CUDA majors
        return False, f"CuPy does not import ({_error(error)}): install one cupy-cudaXXx only, {INSTALL}"
    return True, cp.__version__


def _cuda_version(number: int) -> str:
    return f"{number // 1000}.{number % 1000 // 10}"


def _check_driver():
    import cupy as cp

    try:
        driver = cp.cuda.runtime.driverGetVersion()
        count = cp.cuda.runtime.getDeviceCount()
    except Exception as error:
        return False, f"no usable CUDA driver ({_error(error)}): is there a GPU and its driver (nvidia-smi)?"
    if count < 1:
        return False, "the driver sees no GPU"
    built_for = cp.cuda.runtime.runtimeGetVersion()
    if driver // 1000 < built_for // 1000:
        return False, (f"the driver supports CUDA {_cuda_version(driver)} but CuPy is built for CUDA "
                       f"{_cuda_version(built_for)}: install the extra of the driver's major (cuda12 or cuda13)")
    try:
        name = cp.cuda.runtime.getDeviceProperties(0)["name"]
        name = name.decode() if isinstance(name, bytes) else str(name)
        cp.zeros(1).sum().item()  # a real round trip: a broken driver fails here
    except Exception as error:
        return False, f"the GPU does not answer ({_error(error)})"
    return True, (f"{name}, {count} GPU(s), driver CUDA {_cuda_version(driver)}, "
                  f"CuPy built for {_cuda_version(built_for)}")


def _check_numba_cuda():
    try:
        version = importlib.metadata.version("numba-cuda")
    except importlib.metadata.PackageNotFoundError:
        return False, ("numba-cuda is not installed (numba's built-in numba.cuda is deprecated and predates "
                       f"CUDA 13): {INSTALL}")
    if _version_tuple(version) < MIN_NUMBA_CUDA:
        return False, f"numba-cuda {version} is too old (CUDA 13 arrived in 0.19): {INSTALL}"
    try:
        importlib.import_module("numba.cuda")
    except Exception as error:
        return False, f"numba.cuda does not import ({_error(error)})"
    return True, version


def _check_nvvm():
    try:
        from numba.cuda.cudadrv import nvvm

        version = nvvm.NVVM().get_version()
    except Exception as error:
        return False, f"libNVVM not found ({_error(error)}): numba-cuda[cu12] or [cu13] installs it; {INSTALL}"
    return True, ".".join(map(str, version))


def _check_nvrtc():
    try:
        from numba.cuda.cudadrv import nvrtc

        if hasattr(nvrtc, "_get_nvrtc_version"):  # numba-cuda 0.2x-0.30
            version = nvrtc._get_nvrtc_version()  # loads libnvrtc
        elif hasattr(nvrtc, "NVRTC"):  # older numba-cuda
            version = nvrtc.NVRTC().get_version()
        else:  # no way to ask this version: the launch check below compiles, which needs NVRTC
            return True, "not queried (this numba-cuda has no version call); the launch check compiles"
    except Exception as error:
        return False, f"NVRTC not found ({_error(error)}): numba-cuda[cu12] or [cu13] installs it; {INSTALL}"
    return True, ".".join(map(str, version))


def _check_launch():
    import cupy as cp
    import numpy as np
    from numba import cuda

    try:
        @cuda.jit
        def affine(x, out):
            i = cuda.grid(1)
            if i < x.size:
                out[i] = 2 * x[i] + 1

        x = cp.arange(64, dtype=cp.float32)
        out = cp.zeros_like(x)
        ptr = cp.cuda.get_current_stream().ptr
        stream = cuda.external_stream(ptr) if ptr else 0  # 0: the legacy default stream, as CuPy's
        affine[1, 64, stream](cuda.as_cuda_array(x, sync=False), cuda.as_cuda_array(out, sync=False))
        result = cp.asnumpy(out)
    except Exception as error:
        return False, f"compiling or launching a kernel failed ({_error(error)})"
    if not np.array_equal(result, 2 * np.arange(64, dtype=np.float32) + 1):
        return False, "a kernel ran but wrote wrong values"
    return True, "a tiny kernel compiled, ran and wrote the right values"


CHECKS = (("numpy", _check_numpy), ("cupy", _check_cupy), ("driver", _check_driver),
          ("numba-cuda", _check_numba_cuda), ("NVVM", _check_nvvm), ("NVRTC", _check_nvrtc),
          ("launch", _check_launch))


def _run_checks() -> tuple[Check, ...]:
    done = []
    for name, check in CHECKS:
        try:
            ok, detail = check()
        except Exception as error:  # never raise: an unexpected failure is a failed check
            ok, detail = False, _error(error)
        done.append(Check(name, ok, detail))
        if not ok:
            break
    return tuple(done)


@functools.lru_cache(maxsize=1)
def _cached_checks() -> tuple[Check, ...]:
    return _run_checks()


def cuda_checks(refresh: bool = False) -> tuple[Check, ...]:
    """The checks run so far, in order: all passed, or the last one failed (nothing after it ran)."""
    if refresh:
        _cached_checks.cache_clear()
    return _cached_checks()


def cuda_ready() -> bool:
    """True when every check passed (cached). Never raises."""
    checks = cuda_checks()
    return len(checks) == len(CHECKS) and all(check.ok for check in checks)


def describe(checks=None) -> str:
    """One line per check: ``ok``/``FAIL`` name: detail."""
    checks = cuda_checks() if checks is None else checks
    return "\n".join(f"{'ok' if c.ok else 'FAIL':<4} {c.name}: {c.detail}" for c in checks)
