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


def test_kernels_import_nothing_from_the_engine_or_above():
    """The kernels sit below autograd, cells, nn and models: the raw-array math they share with the
    engine (stable_sigmoid, stable_softplus) lives in minirec.numerics, below both."""
    import ast
    from pathlib import Path

    root = Path(kernels.__file__).parent
    above = ("minirec.autograd", "minirec.cells", "minirec.nn", "minirec.models", "minirec.training")
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(root)}: {name}" for name in names if name.startswith(above)]
    assert not offenders, offenders
    assert len(list(root.rglob("*.py"))) > 20  # the walk saw the cpu/ and cuda/ packages too


def test_the_engine_and_the_kernels_share_one_stable_sigmoid():
    from minirec import numerics
    from minirec.autograd import ops
    from minirec.kernels import sru

    assert ops.stable_sigmoid is numerics.stable_sigmoid is sru.stable_sigmoid
    assert ops.stable_softplus is numerics.stable_softplus
    x = np.array([-800.0, -1.0, 0.0, 1.0, 800.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in exp
        np.testing.assert_allclose(numerics.stable_sigmoid(np, x), [0.0, 0.2689414213699951, 0.5, 0.7310585786300049,
                                                                     1.0])
        np.testing.assert_allclose(numerics.stable_softplus(np, x), [0.0, 0.31326168751822286, np.log(2),
                                                                      1.3132616875182228, 800.0])
