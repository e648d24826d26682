"""`minirec info`: versions, backends and kernels usable on this machine."""

from __future__ import annotations

import importlib
import os
import platform

from minirec import backend

__all__ = ["collect", "add_arguments", "run"]


def _version(module: str) -> str:
    try:
        return getattr(importlib.import_module(module), "__version__", "installed")
    except Exception as error:  # a broken optional install is reported, not raised
        return f"not usable ({type(error).__name__})"


def _kernel_mode() -> str:
    from minirec.kernels import kernel_mode

    try:
        return kernel_mode()
    except ValueError as error:  # a bad MINIREC_KERNELS: say so here rather than fail
        return f"invalid ({error})"


def _cuda_checks() -> list[str]:
    """What the GPU preflight found, one line per check, stopping at the first failure."""
    from minirec.kernels.preflight import cuda_checks

    return [f"{'ok' if check.ok else 'FAIL'} {check.name}: {check.detail}" for check in cuda_checks()]


def collect() -> dict:
    """What a bug report or a results file should say about the machine."""
    import minirec
    from minirec import cells, kernels  # noqa: F401 - importing registers cells and kernels

    kernels.load_kind("cpu")  # fast kernels load lazily: load them to say which are usable
    if backend.cuda_available():
        kernels.load_kind("cuda")
    return {
        "minirec": minirec.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "cupy": _version("cupy") if backend._cupy() is not None else "not installed",
        "cuda_usable": backend.cuda_available(),
        "cuda_checks": _cuda_checks(),
        "kernel_mode": _kernel_mode(),
        "cells": cells.cell_names(),
        "kernels": kernels.kernel_names(),
    }


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    facts = collect()
    if getattr(args, "json", False):
        import json

        print(json.dumps(facts, indent=2))
        return 0
    for key, value in facts.items():
        if key == "kernels":
            value = ", ".join(f"{name} ({'/'.join(kinds)})" for name, kinds in value.items()) or "none"
        elif key == "cuda_checks":
            value = ("\n" + " " * 13).join(value)
        elif isinstance(value, list):
            value = " ".join(value)
        print(f"{key:<12} {value}")
    return 0
