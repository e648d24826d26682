"""The fused Adam kernel against the whole-array reference: equal bit for bit."""

import numpy as np
import pytest

from minirec import Tensor, manual_seed, nn
from minirec.kernels import get_kernel, optim

numba = pytest.importorskip("numba")
from minirec.kernels.cpu import optim as cpu_optim  # noqa: E402

SETTINGS = dict(lr=3e-3, beta1=0.9, beta2=0.999, eps=1e-8)


def _state(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(shape).astype(dtype)
    moments = [np.zeros(shape, dtype), np.zeros(shape, dtype)]
    grads = [rng.standard_normal(shape).astype(dtype) * rng.choice([1e-4, 1.0, 30.0], size=shape).astype(dtype)
             for _ in range(5)]
    return param, moments, grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("shape", [(7,), (33, 65)])
def test_fused_adam_equals_reference_bit_for_bit(dtype, weight_decay, shape):
    results = []
    for update in (optim.adam_update, cpu_optim.adam_update):
        param, (m, v), grads = _state(shape, dtype, seed=1)
        for step, grad in enumerate(grads, start=1):
            update(param, grad, m, v, weight_decay=weight_decay, step=step, **SETTINGS)
        results.append((param, m, v))
    for reference, fused in zip(*results):
        assert reference.dtype == fused.dtype == dtype
        np.testing.assert_array_equal(fused, reference)
    assert not np.array_equal(results[0][0], _state(shape, dtype, seed=1)[0])  # it moved


def test_fused_adam_takes_any_layout_through_the_reference():
    # a strided view of a parameter (and a float64 gradient for a float32 parameter) cannot be
    # fused; the kernel must still update the view, as the reference does
    results = []
    for update in (optim.adam_update, cpu_optim.adam_update):
        base, (m, v), grads = _state((6, 8), np.float32, seed=2)
        view = base[:, ::2]
        m, v = m[:, ::2], v[:, ::2]
        update(view, grads[0][:, ::2].astype(np.float64), m, v, weight_decay=0.0, step=1, **SETTINGS)
        results.append(base)
    np.testing.assert_array_equal(results[1], results[0])
    assert not np.array_equal(results[0], _state((6, 8), np.float32, seed=2)[0])


def test_adam_picks_the_fused_kernel_on_numpy_arrays(monkeypatch):
    assert get_kernel("adam_update", np) is cpu_optim.adam_update
    assert get_kernel("adam_update", np, kind="reference") is optim.adam_update

    def run():
        manual_seed(0)
        rng = np.random.default_rng(0)
        model = nn.Linear(5, 3)
        opt = nn.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
        for _ in range(4):
            opt.zero_grad()
            x = Tensor(rng.standard_normal((4, 5)).astype(np.float32))
            (model(x) * model(x)).sum().backward()
            opt.step()
        return model.weight.data.copy(), opt.state_dict()

    fused_weight, fused_state = run()
    monkeypatch.setenv("MINIREC_KERNELS", "reference")
    reference_weight, reference_state = run()
    np.testing.assert_array_equal(fused_weight, reference_weight)
    assert fused_state.keys() == reference_state.keys()
    for key in fused_state:
        np.testing.assert_array_equal(fused_state[key], reference_state[key])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 1000, 4099])
def test_sum_of_squares_equals_reference(dtype, size):
    x = (np.random.default_rng(size).standard_normal(size) * 3).astype(dtype)
    fused, reference = cpu_optim.sum_of_squares(x), optim.sum_of_squares(x)
    assert fused.dtype == reference.dtype == np.float64
    np.testing.assert_allclose(fused, reference, rtol=1e-13)  # only the order of float64 additions differs
    assert fused == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-6)


def test_sum_of_squares_keeps_overflow_and_nan_visible():
    # a float32 square of 1e20 overflows, as the reference's does: the clip norm must say inf
    assert cpu_optim.sum_of_squares(np.array([1e20, 1.0] * 20, np.float32)) == np.inf
    assert np.isnan(cpu_optim.sum_of_squares(np.array([1.0] * 20 + [np.nan], np.float32)))
    view = np.arange(40, dtype=np.float32).reshape(8, 5)[:, ::2]  # not contiguous: the reference
    assert cpu_optim.sum_of_squares(view) == optim.sum_of_squares(view)


def test_clip_grad_norm_uses_the_fused_sum(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_optim, "_sum_of_squares", lambda x: calls.append(x.size) or float((x * x).sum()))
    params = [nn.Parameter(np.ones((3, 4), np.float32)), nn.Parameter(np.ones(5, np.float32))]
    params[0].grad, params[1].grad = np.full((3, 4), 2.0, np.float32), np.full(5, 2.0, np.float32)
    norm = nn.clip_grad_norm(params, max_norm=1.0)
    assert calls == [12, 5]
    assert norm == pytest.approx(2 * np.sqrt(17))
    assert float(np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in params))) == pytest.approx(1.0, rel=1e-5)
