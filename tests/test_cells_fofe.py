"""FOFE: fused == reference, closed form == recurrence, padding inert, errors."""

import numpy as np
import pytest

import minirec as mr
from minirec.cells import FOFE, RecurrentLayer, fofe_closed_form, fofe_matrix


def x64(shape, seed=0):
    return mr.tensor(np.random.default_rng(seed).standard_normal(shape), requires_grad=True)


def grads_of(fn, inputs, seed=1):
    for t in inputs:
        t.grad = None
    y, h = fn()
    rng = np.random.default_rng(seed)
    loss = (y * mr.tensor(rng.standard_normal(y.shape))).sum() + (h * mr.tensor(rng.standard_normal(h.shape))).sum()
    loss.backward()
    return y.data, h.data, [t.grad.copy() for t in inputs]


@pytest.mark.parametrize("with_mask", [False, True])
def test_fused_matches_reference(with_mask):
    cell = FOFE(4, alpha=0.7)
    x, h0 = x64((6, 3, 4)), x64((3, 4), seed=2)
    mask = np.arange(6)[:, None] < np.array([6, 3, 1])[None, :] if with_mask else None
    fused = grads_of(lambda: cell(x, h0, mask), [x, h0])
    reference = grads_of(lambda: cell.run_reference(x, h0, mask), [x, h0])
    for a, b in zip(fused[:2] + tuple(fused[2]), reference[:2] + tuple(reference[2])):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_closed_form_is_the_recurrence():
    x = x64((7, 2, 3))
    y, _ = FOFE(3, alpha=0.6)(x)
    np.testing.assert_allclose(fofe_closed_form(x, 0.6).data, y.data, atol=1e-12)
    L = fofe_matrix(4, 0.5, dtype=np.float64)
    np.testing.assert_allclose(L, [[1, 0, 0, 0], [0.5, 1, 0, 0], [0.25, 0.5, 1, 0], [0.125, 0.25, 0.5, 1]])


def test_padding_is_inert_in_both_directions():
    layer = RecurrentLayer("fofe", 3, 3, bidirectional=True, alpha=0.8)
    lengths = [5, 2]
    x = x64((5, 2, 3))
    mask = np.arange(5)[:, None] < np.array(lengths)[None, :]
    y, h = layer(x, mask=mask)
    (y.sum() + h.sum()).backward()
    for b, n in enumerate(lengths):
        xb = mr.tensor(x.data[:n, b : b + 1], requires_grad=True)
        yb, hb = layer(xb)
        (yb.sum() + hb.sum()).backward()
        np.testing.assert_allclose(y.data[:n, b : b + 1], yb.data, atol=1e-12)
        np.testing.assert_allclose(h.data[:, b : b + 1], hb.data, atol=1e-12)
        np.testing.assert_allclose(x.grad[:n, b : b + 1], xb.grad, atol=1e-12)
        assert np.all(y.data[n:, b] == 0) and np.all(x.grad[n:, b] == 0)


def test_gradcheck_bidirectional_with_h0():
    layer = RecurrentLayer("fofe", 3, 3, bidirectional=True, alpha=0.5)
    x, h0 = x64((4, 2, 3)), x64((2, 2, 3), seed=3)
    assert mr.gradcheck(lambda x, h0: layer(x, h0), [x, h0]).passed


def test_empty_sequence_returns_h0():
    h0 = x64((2, 3))
    y, h = FOFE(3)(mr.tensor(np.zeros((0, 2, 3))), h0)
    assert y.shape == (0, 2, 3)
    np.testing.assert_array_equal(h.data, h0.data)


def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 1\)"):
        FOFE(3, alpha=1.0)
    with pytest.raises(ValueError, match="hidden_size .* must equal input_size"):
        FOFE(3, 4)
    cell = FOFE(3)
    with pytest.raises(ValueError, match="time-major"):
        cell(mr.tensor(np.ones((2, 3))))
    with pytest.raises(ValueError, match="feature size 2"):
        cell(mr.tensor(np.ones((2, 1, 2))))
    with pytest.raises(ValueError, match="NaN or inf"):
        cell(mr.tensor(np.full((2, 1, 3), np.nan)))
    with pytest.raises(ValueError, match=r"mask must have shape \(T, B\)"):
        cell(mr.tensor(np.ones((2, 1, 3))), mask=np.ones((1, 2), bool))
    with pytest.raises(ValueError, match="h0 must have shape"):
        cell(mr.tensor(np.ones((2, 1, 3))), h0=mr.tensor(np.ones((2, 3))))
