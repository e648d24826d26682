"""Host synchronisations: on a GPU every value read back to Python (bool(), float(), int(), .item(),
.tolist() of a device array) waits for all queued work. The checks of a cell's inputs and the
clipping norm read their device values back once per call, not once per check or per gradient.

Counted here on the CPU with an ndarray subclass whose reductions stay in the subclass and which
counts every conversion of one of its values to a Python object (the single combined transfer
goes through a plain array, as np.stack returns one, so it is not counted: what is counted is
one transfer per check or per gradient, the pattern that must not come back)."""

from __future__ import annotations

import numpy as np
import pytest

from minirec.autograd.function import Tensor
from minirec.cells.base import get_cell


class Counted(np.ndarray):
    reads = 0

    def _read(self, name, *args):
        Counted.reads += 1
        return getattr(np.ndarray, name)(self, *args)

    def __bool__(self):
        return self._read("__bool__")

    def __float__(self):
        return self._read("__float__")

    def __int__(self):
        return self._read("__int__")

    def item(self, *args):
        return self._read("item", *args)

    def tolist(self):
        return self._read("tolist")


@pytest.fixture
def reads():
    Counted.reads = 0
    return lambda: Counted.reads


def test_clip_grad_norm_reads_one_value_for_all_gradients(reads, monkeypatch):
    from minirec.nn.module import Parameter
    from minirec.nn.optim import clip_grad_norm

    rng = np.random.default_rng(0)
    params = [Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in ((3, 4), (4,), (5, 2), (7,))]
    for p in params:
        p.grad = rng.standard_normal(p.shape).astype(np.float32).view(Counted)
    expected = float(np.sqrt(sum(float((np.asarray(p.grad, np.float64) ** 2).sum()) for p in params)))
    monkeypatch.setenv("MINIREC_KERNELS", "reference")  # the sums a device array gets (the cpu one is NumPy's)
    Counted.reads = 0
    norm = clip_grad_norm(params, 0.5)
    assert norm == pytest.approx(expected, rel=1e-6)
    assert reads() == 1, f"{reads()} host reads for {len(params)} gradients"
    total = np.sqrt(sum(float((np.asarray(p.grad, np.float64) ** 2).sum()) for p in params))
    assert total == pytest.approx(0.5, rel=1e-4)  # and it still clips


@pytest.mark.parametrize("cell", ["sru", "lstm"])
def test_a_cell_checks_its_inputs_without_reading_each_check_back(cell, reads):
    rng = np.random.default_rng(1)
    layer = get_cell(cell)(3, 4)
    x = Tensor(rng.standard_normal((5, 2, 3)).astype(np.float32).view(Counted))
    mask = np.ones((5, 2), np.float32).view(Counted)
    h0 = layer.init_state(2, np, np.float32)
    h0 = tuple(Tensor(np.asarray(s.data).view(Counted)) for s in h0) if isinstance(h0, tuple) else \
        Tensor(np.asarray(h0.data).view(Counted))
    Counted.reads = 0
    layer.check_inputs(x, h0, mask)
    assert reads() == 0, f"{reads()} host reads of single checks (x finite, mask 0/1, h0 finite)"


def test_the_combined_checks_still_name_each_problem():
    layer = get_cell("lstm")(3, 4)
    x = np.zeros((5, 2, 3), np.float32)
    bad_x = x.copy()
    bad_x[2, 1, 0] = np.nan
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        layer.check_inputs(Tensor(bad_x), None, np.full((5, 2), 2.0, np.float32))  # x is named first
    with pytest.raises(ValueError, match="mask must contain only 0 and 1"):
        layer.check_inputs(Tensor(x), None, np.full((5, 2), 2.0, np.float32))
    h0 = (Tensor(np.full((2, 4), np.inf, np.float32)), Tensor(np.zeros((2, 4), np.float32)))
    with pytest.raises(ValueError, match="h0 contains NaN or inf"):
        layer.check_inputs(Tensor(x), h0, None)
    layer.check_inputs(Tensor(x), None, np.ones((5, 2), np.float32))  # all fine: no error
