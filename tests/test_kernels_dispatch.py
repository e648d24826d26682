"""Kernel dispatch: MINIREC_KERNELS is checked, and a kind that was asked for is not silently replaced."""

import warnings

import numpy as np
import pytest

from minirec import kernels
from minirec.kernels import get_kernel, kernel_mode


@pytest.mark.parametrize("value", ["gpu", "CPUs", "numba"])
def test_an_unknown_kernel_mode_is_named(value, monkeypatch):
    monkeypatch.setenv("MINIREC_KERNELS", value)
    with pytest.raises(ValueError, match=f"MINIREC_KERNELS='{value}': use one of auto, reference, cpu, cuda"):
        get_kernel("linear_scan_forward", np)


def test_an_empty_or_capitalised_mode_means_what_it_says(monkeypatch):
    monkeypatch.setenv("MINIREC_KERNELS", "")
    assert kernel_mode() == "auto"
    monkeypatch.setenv("MINIREC_KERNELS", " Reference ")
    assert kernel_mode() == "reference"
    assert get_kernel("linear_scan_forward", np) is get_kernel("linear_scan_forward", np, kind="reference")


def test_a_forced_kind_that_cannot_load_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setitem(kernels.FAST_MODULES, "cuda", "minirec.kernels.no_such_module")
    monkeypatch.setenv("MINIREC_KERNELS", "cuda")
    saved = kernels._loaded.pop("cuda", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "using the reference loops" on the way to an error
            with pytest.raises(RuntimeError, match="the cuda kernels were asked for .* cannot be loaded: No module"):
                get_kernel("linear_scan_forward", np)
    finally:  # forget the failed load, so that later tests load the real module
        kernels._loaded.pop("cuda", None)
        if saved is not None:
            kernels._loaded["cuda"] = saved


def test_info_reports_a_bad_mode_instead_of_failing(monkeypatch):
    from minirec.info import collect

    monkeypatch.setenv("MINIREC_KERNELS", "gpu")
    assert collect()["kernel_mode"].startswith("invalid (MINIREC_KERNELS='gpu'")
