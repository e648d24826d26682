"""Tests for the SRU and QRNN cells: fused Function vs reference loop, gradcheck, padding,
parameter counts, input validation, and SRU's initialisation-time variance correction."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minirec
import minirec.cells.qrnn  # noqa: F401 - registers "qrnn"
import minirec.cells.sru  # noqa: F401 - registers "sru"
from minirec import backend
from minirec.autograd.function import Tensor, no_grad
from minirec.cells.base import RecurrentLayer, get_cell
from minirec.cells.qrnn import QRNN
from minirec.cells.sru import SRU, from_official_layout, scaling_correction, to_official_layout

# (cell name, input_size, hidden_size, options): every variant, both k = 3 and k = 4 layouts.
CONFIGS = [
    ("sru", 4, 4, {}),
    ("sru", 3, 5, {}),
    ("sru", 4, 4, {"highway_bias": -1.5, "rescale": False}),
    ("sru", 3, 4, {"layer_norm": True, "highway_bias": 0.5}),
    ("sru", 4, 4, {"dropout": 0.4}),
    ("sru", 5, 3, {"dropout": 0.3, "layer_norm": True}),
    ("qrnn", 4, 4, {}),
    ("qrnn", 3, 5, {}),
    ("qrnn", 4, 4, {"highway": True}),
    ("qrnn", 3, 5, {"highway": True}),
    ("qrnn", 5, 3, {"highway": True}),
]
IDS = [f"{n}-{d}x{h}-" + ",".join(f"{k}={v}" for k, v in o.items()) for n, d, h, o in CONFIGS]
DROP_SEED = 7  # reseeded before every call so the fused and the reference path draw the same dropout mask
MASK = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=bool)  # lengths 5, 2, 1


@pytest.fixture(autouse=True)
def float64():
    previous = backend.get_default_dtype()
    backend.set_default_dtype(np.float64)
    backend.manual_seed(0)
    yield
    backend.set_default_dtype(previous)


def make_cell(name, D, H, options, seed=0):
    backend.manual_seed(seed)
    return get_cell(name)(D, H, **options)


def random_inputs(T, B, D, H, seed=1):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.standard_normal((T, B, D)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((B, H)) * 0.5, requires_grad=True)
    return x, h0


def outputs_and_grads(fn, module, x, h0, mask, seed=1):
    """(y, last state) and the gradients of x, h0 and every parameter of a random projection of both."""
    backend.manual_seed(DROP_SEED)
    y, state = fn(x, h0, mask)
    rng = np.random.default_rng(seed)
    loss = (y * Tensor(rng.standard_normal(y.shape))).sum() + (state * Tensor(rng.standard_normal(state.shape))).sum()
    leaves = [t for t in (x, h0) if t is not None] + module.parameters()
    for t in leaves:
        t.grad = None
    loss.backward()
    grads = {"x": x.grad, **({"h0": h0.grad} if h0 is not None else {})}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return y.data, state.data, grads


def assert_same(a, b, tol=1e-10):
    ya, sa, ga = a
    yb, sb, gb = b
    np.testing.assert_allclose(ya, yb, rtol=0, atol=tol)
    np.testing.assert_allclose(sa, sb, rtol=0, atol=tol)
    assert ga.keys() == gb.keys()
    for k in ga:
        assert ga[k] is not None and gb[k] is not None, k
        np.testing.assert_allclose(ga[k], gb[k], rtol=0, atol=tol, err_msg=k)


# ---- fused == reference ----------------------------------------------------------------------
@pytest.mark.parametrize("name,D,H,options", CONFIGS, ids=IDS)
@pytest.mark.parametrize("with_h0,with_mask", [(True, True), (False, False), (True, False)])
def test_fused_matches_reference(name, D, H, options, with_h0, with_mask):
    cell = make_cell(name, D, H, options)
    x, h0 = random_inputs(5, 3, D, H)
    h0 = h0 if with_h0 else None
    mask = MASK if with_mask else None
    fused = outputs_and_grads(cell, cell, x, h0, mask)
    reference = outputs_and_grads(cell.run_reference, cell, x, h0, mask)
    assert_same(fused, reference)


@pytest.mark.parametrize("name,D,H,options", CONFIGS[:2] + CONFIGS[6:8], ids=IDS[:2] + IDS[6:8])
@pytest.mark.parametrize("T,B", [(1, 3), (4, 1), (1, 1)])
def test_short_and_single_sequences(name, D, H, options, T, B):
    cell = make_cell(name, D, H, options)
    x, h0 = random_inputs(T, B, D, H)
    mask = np.ones((T, B), dtype=bool)
    assert_same(outputs_and_grads(cell, cell, x, h0, mask), outputs_and_grads(cell.run_reference, cell, x, h0, mask))
    minirec.gradcheck(lambda x, h0, *params: cell(x, h0), [x, h0, *cell.parameters()])


@pytest.mark.parametrize("name", ["sru", "qrnn"])
def test_empty_sequence_returns_h0(name):
    cell = make_cell(name, 3, 3, {})
    x, h0 = random_inputs(0, 2, 3, 3)
    y, c = cell(x, h0)
    assert y.shape == (0, 2, 3)
    np.testing.assert_array_equal(c.data, h0.data)
    c.sum().backward()
    np.testing.assert_array_equal(h0.grad, np.ones((2, 3)))


# ---- gradcheck -------------------------------------------------------------------------------
def call_with_fixed_dropout(module, *args):
    backend.manual_seed(DROP_SEED)
    return module(*args)


@pytest.mark.parametrize("name,D,H,options", CONFIGS, ids=IDS)
def test_gradcheck_cell_with_h0_and_mask(name, D, H, options):
    cell = make_cell(name, D, H, options)
    x, h0 = random_inputs(4, 3, D, H)
    mask = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 0], [1, 0, 0]], dtype=bool)  # lengths 4, 2, 0: one all padding
    minirec.gradcheck(lambda *inputs: call_with_fixed_dropout(cell, x, h0), [x, h0, *cell.parameters()])
    minirec.gradcheck(lambda *inputs: call_with_fixed_dropout(cell, x, h0, mask), [x, h0, *cell.parameters()])


@pytest.mark.parametrize("name,D,H,options", CONFIGS, ids=IDS)
def test_gradcheck_bidirectional(name, D, H, options):
    backend.manual_seed(0)
    layer = RecurrentLayer(name, D, H, bidirectional=True, **options)
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((3, 2, D)), requires_grad=True)
    h0 = Tensor(rng.standard_normal((2, 2, H)) * 0.5, requires_grad=True)
    mask = np.array([[1, 1], [1, 1], [1, 0]], dtype=bool)
    minirec.gradcheck(lambda *inputs: call_with_fixed_dropout(layer, x, h0, mask), [x, h0, *layer.parameters()])


# ---- padding is inert ------------------------------------------------------------------------
@pytest.mark.parametrize("name,D,H,options", CONFIGS, ids=IDS)
def test_padding_is_inert_bidirectional(name, D, H, options):
    backend.manual_seed(0)
    layer = RecurrentLayer(name, D, H, bidirectional=True, **options).eval()  # eval: no dropout mask
    T, lengths = 5, [5, 2, 3]
    B = len(lengths)
    rng = np.random.default_rng(3)
    x_full = rng.standard_normal((T, B, D))
    h0_full = rng.standard_normal((2, B, H)) * 0.5
    grad_y = rng.standard_normal((T, B, 2 * H))
    grad_state = rng.standard_normal((2, B, H))
    mask = np.arange(T)[:, None] < np.array(lengths)[None, :]

    def run(x_data, h0_data, m, gy, gs):
        x, h0 = Tensor(x_data, requires_grad=True), Tensor(h0_data, requires_grad=True)
        layer.zero_grad()
        y, state = layer(x, h0, m)
        ((y * Tensor(gy)).sum() + (state * Tensor(gs)).sum()).backward()
        return y.data, state.data, x.grad, h0.grad, {k: p.grad.copy() for k, p in layer.named_parameters()}

    y, state, gx, gh0, gparams = run(x_full, h0_full, mask, grad_y, grad_state)
    assert np.all(y[~mask] == 0), "outputs at padded positions must be zero"
    assert np.all(gx[~mask] == 0), "no gradient may reach padded inputs"
    summed = {k: np.zeros_like(v) for k, v in gparams.items()}
    for b, L in enumerate(lengths):
        y_b, state_b, gx_b, gh0_b, gp_b = run(
            x_full[:L, b : b + 1], h0_full[:, b : b + 1], None, grad_y[:L, b : b + 1], grad_state[:, b : b + 1]
        )
        np.testing.assert_allclose(y[:L, b : b + 1], y_b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(state[:, b : b + 1], state_b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(gx[:L, b : b + 1], gx_b, rtol=0, atol=1e-12)
        np.testing.assert_allclose(gh0[:, b : b + 1], gh0_b, rtol=0, atol=1e-12)
        for k in summed:
            summed[k] += gp_b[k]
    for k in summed:
        np.testing.assert_allclose(gparams[k], summed[k], rtol=0, atol=1e-11, err_msg=k)


# ---- the equations, written independently in NumPy ------------------------------------------
def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def numpy_layer_norm(x, gamma, beta, eps=1e-5):
    centred = x - x.mean(-1, keepdims=True)
    return centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps) * gamma + beta


def numpy_sru(cell, x, c0, drop=None):
    """Eqs. (1)–(4) step by step from the parameters, reading the block layout by hand."""
    H = cell.hidden_size
    W = cell.weight.data
    W_x, W_f, W_r = W[:, :H], W[:, H : 2 * H], W[:, 2 * H : 3 * H]
    v_f, v_r, b_f, b_r = (p.data for p in (cell.v_f, cell.v_r, cell.b_f, cell.b_r))
    d = 1.0 if drop is None else drop
    c, ys = c0, []
    for x_t in x:
        u_t = numpy_layer_norm(x_t, cell.norm.gamma.data, cell.norm.beta.data) if cell.norm is not None else x_t
        skip = x_t if cell.k == 3 else u_t @ W[:, 3 * H :]
        f = sigmoid(u_t @ W_f + v_f * c + b_f)
        r = sigmoid(u_t @ W_r + v_r * c + b_r)
        c = f * c + (1 - f) * (u_t @ W_x)
        ys.append(r * c * d + (1 - r) * skip * cell.alpha)
    return np.stack(ys), c


def numpy_qrnn(cell, x, c0):
    H = cell.hidden_size
    W, b = cell.weight.data, cell.bias.data
    c, ys = c0, []
    for x_t in x:
        z = np.tanh(x_t @ W[:, :H] + b[:H])
        f = sigmoid(x_t @ W[:, H : 2 * H] + b[H : 2 * H])
        o = sigmoid(x_t @ W[:, 2 * H : 3 * H] + b[2 * H :])
        c = f * c + (1 - f) * z
        h = o * c
        if cell.highway:
            h = h + (1 - o) * (x_t if cell.k == 3 else x_t @ W[:, 3 * H :])
        ys.append(h)
    return np.stack(ys), c


@pytest.mark.parametrize("name,D,H,options", CONFIGS, ids=IDS)
def test_matches_the_paper_equations(name, D, H, options):
    cell = make_cell(name, D, H, options)
    x, h0 = random_inputs(4, 3, D, H)
    drop = None
    if name == "sru":
        backend.manual_seed(DROP_SEED)
        drop = cell._dropout_mask(3, np, x.dtype)
        assert (drop is None) == (cell.dropout == 0)
        expected_y, expected_c = numpy_sru(cell, x.data, h0.data, drop)
    else:
        expected_y, expected_c = numpy_qrnn(cell, x.data, h0.data)
    backend.manual_seed(DROP_SEED)
    with no_grad():
        y, c = cell(x, h0)
    np.testing.assert_allclose(y.data, expected_y, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c.data, expected_c, rtol=0, atol=1e-12)


# ---- SRU specifics ---------------------------------------------------------------------------
def test_sru_scaling_correction():
    assert scaling_correction(0.0) == pytest.approx(math.sqrt(3))
    for b in (-3.0, -1.0, 0.5, 2.0):
        assert scaling_correction(b) == pytest.approx(math.sqrt(1 + 2 * math.exp(b)))
        assert SRU(4, 4, highway_bias=b).alpha == pytest.approx(math.sqrt(1 + 2 * math.exp(b)))
        assert SRU(4, 4, highway_bias=b, rescale=False).alpha == 1.0


def test_sru_init():
    cell = make_cell("sru", 400, 300, {"highway_bias": -3.0})
    assert cell.weight.shape == (400, 4 * 300) and cell.k == 4
    assert np.abs(cell.weight.data).max() <= math.sqrt(3 / 400)
    assert cell.weight.data.var() == pytest.approx(1 / 400, rel=0.02)
    for v in (cell.v_f, cell.v_r):
        assert np.abs(v.data).max() <= math.sqrt(1.5)
        assert v.data.var() == pytest.approx(0.5, rel=0.25)
    np.testing.assert_array_equal(cell.b_f.data, 0)
    np.testing.assert_array_equal(cell.b_r.data, -3.0)
    assert SRU(5, 5).k == 3


@pytest.mark.parametrize("highway_bias", [0.0, -3.0])
def test_sru_variance_is_preserved_at_init(highway_bias):
    """§3.2: with α, Var[h] ≈ Var[x] at init; without it (b = 0) the ratio lies in [1/3, 1/2].
    Measured (3 seeds): rescale 1.03 (b = 0), 0.96 (b = −3); no rescale 0.43 (b = 0)."""
    backend.set_default_dtype(np.float32)
    x = Tensor(np.random.default_rng(0).standard_normal((32, 64, 256)).astype(np.float32))
    ratios = {}
    for rescale in (True, False):
        cell = make_cell("sru", 256, 256, {"highway_bias": highway_bias, "rescale": rescale})
        with no_grad():
            y, _ = cell(x)
        assert y.dtype == np.float32
        ratios[rescale] = float(y.data.var() / x.data.var())
    assert 0.85 < ratios[True] < 1.2, ratios
    if highway_bias == 0.0:
        assert 1 / 3 < ratios[False] < 1 / 2, ratios
        assert ratios[False] < 0.75


def test_sru_dropout_only_in_training_and_fixed_over_time():
    cell = make_cell("sru", 4, 4, {"dropout": 0.5})
    x, h0 = random_inputs(6, 3, 4, 4)
    backend.manual_seed(DROP_SEED)
    drop = cell._dropout_mask(3, np, x.dtype)
    assert drop.shape == (3, 4) and set(np.unique(drop)) <= {0.0, 2.0}
    with no_grad():
        backend.manual_seed(DROP_SEED)
        y_train, _ = cell(x, h0)
        cell.eval()
        y_eval, _ = cell(x, h0)
    # numpy_sru applies the same (B, H) mask at every step.
    np.testing.assert_allclose(y_train.data, numpy_sru(cell, x.data, h0.data, drop)[0], atol=1e-12)
    np.testing.assert_allclose(y_eval.data, numpy_sru(cell, x.data, h0.data)[0], atol=1e-12)
    assert not np.allclose(y_train.data, y_eval.data)


def test_sru_official_layout_conversion():
    H, k = 3, 4
    ours = np.arange(2 * k * H, dtype=float).reshape(2, k * H)
    official = to_official_layout(ours, H)
    for i in range(k):
        for j in range(H):
            np.testing.assert_array_equal(official[:, j * k + i], ours[:, i * H + j])
    np.testing.assert_array_equal(from_official_layout(official, H), ours)


# ---- parameter counts ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,D,H,options",
    [
        ("sru", 4, 4, {}),
        ("sru", 3, 7, {}),
        ("sru", 6, 2, {"layer_norm": True}),
        ("sru", 5, 5, {"layer_norm": True, "dropout": 0.2}),
        ("qrnn", 4, 4, {}),
        ("qrnn", 3, 7, {}),
        ("qrnn", 3, 7, {"highway": True}),
        ("qrnn", 5, 5, {"highway": True}),
    ],
)
def test_parameter_count(name, D, H, options):
    cls = get_cell(name)
    expected = cls.parameter_count(D, H, **options)
    assert cls(D, H, **options).count_parameters() == expected
    assert RecurrentLayer(name, D, H, bidirectional=True, **options).count_parameters() == 2 * expected


def test_parameter_count_closed_forms():
    assert SRU.parameter_count(4, 4) == 3 * 16 + 16
    assert SRU.parameter_count(3, 5) == 4 * 15 + 20
    assert SRU.parameter_count(3, 5, layer_norm=True) == 4 * 15 + 20 + 6
    assert QRNN.parameter_count(3, 5) == 3 * 15 + 15
    assert QRNN.parameter_count(3, 5, highway=True) == 4 * 15 + 15
    assert QRNN.parameter_count(5, 5, highway=True) == 3 * 25 + 15


# ---- dtype -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", [("sru", {}), ("sru", {"layer_norm": True}), ("qrnn", {"highway": True})])
def test_float32_stays_float32(name, options):
    backend.set_default_dtype(np.float32)
    cell = make_cell(name, 3, 4, options)
    x = Tensor(np.random.default_rng(0).standard_normal((3, 2, 3)).astype(np.float32), requires_grad=True)
    y, c = cell(x, mask=np.ones((3, 2), dtype=np.float32))
    (y.sum() + c.sum()).backward()
    assert y.dtype == c.dtype == x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in cell.parameters())


# ---- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["sru", "qrnn"])
def test_bad_inputs(name):
    cell = make_cell(name, 3, 4, {})
    x, h0 = random_inputs(2, 2, 3, 4)
    with pytest.raises(ValueError, match="time-major"):
        cell(Tensor(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="feature size 5"):
        cell(Tensor(np.zeros((2, 2, 5))))
    with pytest.raises(TypeError, match="floating point"):
        cell(Tensor(np.zeros((2, 2, 3), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 4\)"):
        cell(x, Tensor(np.zeros((2, 3))))
    with pytest.raises(TypeError, match="h0 has dtype"):
        cell(x, Tensor(np.zeros((2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="mask must have shape"):
        cell(x, h0, np.ones((2, 3), dtype=bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        cell(x, h0, np.ones((2, 2), dtype=complex))
    with pytest.raises(ValueError, match="only 0 and 1"):
        cell(x, h0, np.full((2, 2), 2.0))
    bad = x.data.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cell(Tensor(bad))
    layer = RecurrentLayer(name, 3, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"bidirectional h0 must have shape \(2, B, H\)"):
        layer(x, h0)


def test_bad_options():
    with pytest.raises(ValueError, match="dropout"):
        SRU(3, 3, dropout=1.0)
    with pytest.raises(ValueError, match="dropout"):
        SRU(3, 3, dropout=-0.1)
    with pytest.raises(ValueError, match="highway_bias"):
        SRU(3, 3, highway_bias=float("nan"))
    with pytest.raises(TypeError, match="rescale"):
        SRU(3, 3, rescale="yes")
    with pytest.raises(TypeError, match="layer_norm"):
        SRU(3, 3, layer_norm=1)
    with pytest.raises(TypeError, match="highway"):
        QRNN(3, 3, highway="yes")
    with pytest.raises(TypeError):
        SRU(3, 3, window=2)  # unknown option
    with pytest.raises(ValueError, match="positive"):
        QRNN(0, 3)
