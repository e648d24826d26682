"""Tests for the gated cells with an h-to-h matrix: GRU, LSTM, MGU, SGU.

Every check is in float64 at small sizes: the fused Functions (hand-written BPTT) against the
Tensor-op reference loop and against finite differences, padding, parameter counts, bad input.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import minirec
import minirec.cells.gru
import minirec.cells.lstm
import minirec.cells.mgu
import minirec.cells.sgu  # noqa: F401 - importing registers the cells
from minirec import backend
from minirec.autograd.function import Tensor
from minirec.cells.base import RecurrentLayer, get_cell
from minirec.kernels import get_kernel, kernel_names

VARIANTS = [
    ("gru", {}), ("gru", {"reset_after": True}), ("lstm", {}), ("lstm", {"forget_bias": 0.0}), ("mgu", {}), ("sgu", {}),
]
IDS = ["gru", "gru-reset-after", "lstm", "lstm-fb0", "mgu", "sgu"]
NAMES = ["gru", "lstm", "mgu", "sgu"]
TOL = 1e-10


@pytest.fixture(autouse=True)
def float64_and_seed():
    previous = backend.get_default_dtype()
    backend.set_default_dtype(np.float64)
    backend.manual_seed(1234)
    yield
    backend.set_default_dtype(previous)


# ---- helpers ------------------------------------------------------------------------------------
def n_states(name):
    return 2 if name == "lstm" else 1


def pack(name, tensors):
    """A list of state tensors as the cell expects them: a tuple for LSTM, else one Tensor."""
    return tuple(tensors) if name == "lstm" else tensors[0]


def unpack(state):
    return list(state) if isinstance(state, tuple) else [state]


def lengths_mask(lengths, T):
    return np.arange(T)[:, None] < np.asarray(lengths)[None, :]


def make_inputs(name, T, B, D, H, seed=0, layer=False):
    """x (T, B, D) and a list of initial-state arrays, (B, H) or (2, B, H) for a layer."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, D))
    shape = (2, B, H) if layer else (B, H)
    h0 = [rng.normal(size=shape) * 0.5 for _ in range(n_states(name))]
    return x, h0


def run_with_grads(fn, module, name, x, h0, mask, seed=1):
    """Call fn(x, h0, mask), backprop a random projection of (y, state), return NumPy copies of
    the outputs and of the gradients of x, of each h0 part and of every parameter."""
    module.zero_grad()
    x_t = Tensor(x.copy(), requires_grad=True)
    h0_t = None if h0 is None else [Tensor(h.copy(), requires_grad=True) for h in h0]
    y, state = fn(x_t, None if h0_t is None else pack(name, h0_t), mask)
    outputs = [y] + unpack(state)
    rng = np.random.default_rng(seed)
    loss = None
    for o in outputs:
        term = (o * Tensor(rng.normal(size=o.shape))).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    zero_if_none = lambda g, like: np.zeros_like(like) if g is None else g  # e.g. nothing reached x at T = 0
    grads = {"x": zero_if_none(x_t.grad, x)}
    for k, h in enumerate(h0_t or []):
        grads[f"h0.{k}"] = zero_if_none(h.grad, h.data)
    for pname, p in module.named_parameters():
        grads[pname] = np.zeros(p.shape) if p.grad is None else p.grad.copy()
    return [o.numpy() for o in outputs], grads


def assert_close(a, b, tol=TOL):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


def gradcheck_module(module, name, x, h0, mask):
    """minirec.gradcheck over x, h0 and every parameter of ``module`` (cell or layer)."""
    x_t = Tensor(x.copy(), requires_grad=True)
    h0_t = [Tensor(h.copy(), requires_grad=True) for h in h0]
    k = len(h0_t)

    def fn(x_in, *rest):
        y, state = module(x_in, pack(name, list(rest[:k])), mask)
        return [y] + unpack(state)

    result = minirec.gradcheck(fn, [x_t, *h0_t, *module.parameters()])
    assert result.passed and result.max_rel_error < 1e-6, str(result)


# ---- fused == reference -------------------------------------------------------------------------
MASKS = {
    "none": None,
    "lengths": lengths_mask([5, 3, 1], 5),
    "holes": np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=np.int64),
    "float": lengths_mask([2, 5, 4], 5).astype(np.float64),
}


@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
@pytest.mark.parametrize("mask_kind", list(MASKS))
@pytest.mark.parametrize("with_h0", [True, False], ids=["h0", "zero-h0"])
def test_fused_matches_reference(name, options, mask_kind, with_h0):
    T, B, D, H = 5, 3, 4, 3
    cell = get_cell(name)(D, H, **options)
    x, h0 = make_inputs(name, T, B, D, H)
    h0 = h0 if with_h0 else None
    mask = MASKS[mask_kind]
    fused_out, fused_grads = run_with_grads(cell, cell, name, x, h0, mask)
    ref_out, ref_grads = run_with_grads(cell.run_reference, cell, name, x, h0, mask)
    for a, b in zip(fused_out, ref_out):
        assert_close(a, b)
    assert fused_grads.keys() == ref_grads.keys()
    for key in fused_grads:
        assert_close(fused_grads[key], ref_grads[key])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("T,B", [(1, 1), (1, 3), (4, 1), (0, 2)])
def test_fused_matches_reference_edge_sizes(name, T, B):
    D, H = 2, 3
    cell = get_cell(name)(D, H)
    x, h0 = make_inputs(name, T, B, D, H, seed=3)
    mask = lengths_mask(np.maximum(T - np.arange(B), 0), T) if T else None
    fused_out, fused_grads = run_with_grads(cell, cell, name, x, h0, mask)
    ref_out, ref_grads = run_with_grads(cell.run_reference, cell, name, x, h0, mask)
    assert fused_out[0].shape == (T, B, H)
    for a, b in zip(fused_out, ref_out):
        assert_close(a, b)
    for key in fused_grads:
        assert_close(fused_grads[key], ref_grads[key])
    if T == 0:  # nothing happens: the last state is h0
        for out, h in zip(fused_out[1:], h0):
            assert_close(out, h, 0)


# ---- finite differences -------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
@pytest.mark.parametrize("mask_kind", ["none", "holes"])
def test_gradcheck_cell(name, options, mask_kind):
    T, B, D, H = 5, 3, 3, 4
    cell = get_cell(name)(D, H, **options)
    x, h0 = make_inputs(name, T, B, D, H, seed=5)
    gradcheck_module(cell, name, x, h0, MASKS[mask_kind])


@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
def test_gradcheck_bidirectional(name, options):
    T, B, D, H = 4, 2, 3, 3
    layer = RecurrentLayer(name, D, H, bidirectional=True, **options)
    x, h0 = make_inputs(name, T, B, D, H, seed=7, layer=True)
    gradcheck_module(layer, name, x, h0, lengths_mask([4, 2], T))


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_single_step_single_example(name):
    cell = get_cell(name)(2, 3)
    x, h0 = make_inputs(name, 1, 1, 2, 3, seed=9)
    gradcheck_module(cell, name, x, h0, None)


# ---- padding ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
def test_padding_is_inert_bidirectional(name, options):
    T, B, D, H = 4, 3, 3, 2
    lengths = [4, 2, 3]
    layer = RecurrentLayer(name, D, H, bidirectional=True, **options)
    x, h0 = make_inputs(name, T, B, D, H, seed=11, layer=True)
    x[lengths_mask(lengths, T) == 0] = 1e3 * np.random.default_rng(0).normal(size=D)  # loud padding
    rng = np.random.default_rng(2)
    w_y = rng.normal(size=(T, B, 2 * H))
    w_state = [rng.normal(size=(2, B, H)) for _ in range(n_states(name))]

    def run(x_in, h0_in, mask, w_y_in, w_state_in):
        layer.zero_grad()
        x_t = Tensor(x_in.copy(), requires_grad=True)
        h0_t = [Tensor(h.copy(), requires_grad=True) for h in h0_in]
        y, state = layer(x_t, pack(name, h0_t), mask)
        loss = (y * Tensor(w_y_in)).sum()
        for s, w in zip(unpack(state), w_state_in):
            loss = loss + (s * Tensor(w)).sum()
        loss.backward()
        params = {n: p.grad.copy() for n, p in layer.named_parameters()}
        return y.numpy(), [s.numpy() for s in unpack(state)], x_t.grad, [h.grad for h in h0_t], params

    y, state, gx, gh0, gparams = run(x, h0, lengths_mask(lengths, T), w_y, w_state)
    summed = {n: np.zeros_like(g) for n, g in gparams.items()}
    for b, L in enumerate(lengths):
        one = slice(b, b + 1)
        y_b, state_b, gx_b, gh0_b, gparams_b = run(
            x[:L, one], [h[:, one] for h in h0], None, w_y[:L, one], [w[:, one] for w in w_state]
        )
        assert_close(y[:L, one], y_b)
        assert not y[L:, b].any()  # padded outputs are exactly zero
        for s, s_b in zip(state, state_b):
            assert_close(s[:, one], s_b)
        assert_close(gx[:L, one], gx_b)
        assert not gx[L:, b].any()  # and nothing flows back into padding
        for g, g_b in zip(gh0, gh0_b):
            assert_close(g[:, one], g_b)
        for n in summed:
            summed[n] += gparams_b[n]
    for n in summed:
        assert_close(gparams[n], summed[n])


# ---- the layout is the paper's [h, x] form --------------------------------------------------------
def sigmoid(a):
    return 1 / (1 + np.exp(-a))


def paper_step(name, cell, x, h, c=None):
    """One step in the papers' notation, with W_k acting on the concatenation [h_{t−1}, x_t]."""
    H = cell.hidden_size
    W = np.concatenate([cell.recurrent_weight.numpy(), cell.input_weight.numpy()], axis=0)  # (H + D, k)
    b = cell.bias.numpy()
    hx = np.concatenate([h, x], axis=1)
    if name == "gru":
        z = sigmoid(hx @ W[:, :H] + b[:H])
        r = sigmoid(hx @ W[:, H : 2 * H] + b[H : 2 * H])
        h_tilde = np.tanh(np.concatenate([r * h, x], axis=1) @ W[:, 2 * H :] + b[2 * H :])
        return (1 - z) * h + z * h_tilde
    if name == "mgu":
        f = sigmoid(hx @ W[:, :H] + b[:H])
        h_tilde = np.tanh(np.concatenate([f * h, x], axis=1) @ W[:, H:] + b[H:])
        return (1 - f) * h + f * h_tilde
    if name == "sgu":
        w_z, w_r = W[:, 0], W[:, 1]  # vectors of size H + D
        z = sigmoid(hx @ w_z + b[0])[:, None]  # one number per example
        r = sigmoid(hx @ w_r + b[1])[:, None]
        h_tilde = np.tanh(np.concatenate([r * h, x], axis=1) @ W[:, 2:] + b[2:])
        return (1 - z) * h + z * h_tilde
    a = hx @ W + b  # lstm
    i, f, o = (sigmoid(a[:, k * H : (k + 1) * H]) for k in range(3))
    c = f * c + i * np.tanh(a[:, 3 * H :])
    return o * np.tanh(c), c


@pytest.mark.parametrize("name", NAMES)
def test_matches_paper_equations(name):
    D, H, B = 3, 4, 2
    cell = get_cell(name)(D, H)
    x, h0 = make_inputs(name, 2, B, D, H, seed=13)
    y, state = cell(Tensor(x), pack(name, [Tensor(h) for h in h0]))
    h, c = h0[0], (h0[1] if name == "lstm" else None)
    for t in range(2):
        if name == "lstm":
            h, c = paper_step(name, cell, x[t], h, c)
        else:
            h = paper_step(name, cell, x[t], h)
        assert_close(y.numpy()[t], h)
    assert_close(unpack(state)[0].numpy(), h)
    if name == "lstm":
        assert_close(state[1].numpy(), c)


def test_sgu_gates_are_scalars_per_example():
    """With x = 0 and b_h = 0, an SGU step maps h ↦ (1 − z) h + z tanh(r h U_h): scaling U_h's
    candidate by r must act on all features of an example alike."""
    cell = get_cell("sgu")(2, 3)
    assert cell.recurrent_weight.shape == (3, 5) and cell.input_weight.shape == (2, 5)
    x, h0 = make_inputs("sgu", 1, 2, 2, 3, seed=17)
    y, _ = cell(Tensor(x), Tensor(h0[0]))
    h = h0[0]
    W = np.concatenate([cell.recurrent_weight.numpy(), cell.input_weight.numpy()])
    b = cell.bias.numpy()
    hx = np.concatenate([h, x[0]], axis=1)
    z = sigmoid(hx @ W[:, 0] + b[0])
    # ĥ = (y − (1 − z) h) / z, then the candidate's pre-activation must be affine in r·h
    h_tilde = (y.numpy()[0] - (1 - z[:, None]) * h) / z[:, None]
    r = sigmoid(hx @ W[:, 1] + b[1])
    expected = np.tanh(r[:, None] * (h @ W[:3, 2:]) + x[0] @ W[3:, 2:] + b[2:])
    assert_close(h_tilde, expected, 1e-9)


# ---- parameters ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", VARIANTS, ids=IDS)
@pytest.mark.parametrize("D,H", [(1, 1), (3, 5), (7, 2), (4, 4)])
def test_parameter_count(name, options, D, H):
    cls = get_cell(name)
    expected = cls.parameter_count(D, H, **options)
    assert cls(D, H, **options).count_parameters() == expected
    assert RecurrentLayer(name, D, H, bidirectional=True, **options).count_parameters() == 2 * expected
    per_gate = H * (H + D) + H
    closed = {"gru": 3 * per_gate, "lstm": 4 * per_gate, "mgu": 2 * per_gate, "sgu": (H + 2) * (H + D + 1)}
    assert expected == closed[name] + (H if options.get("reset_after") else 0)  # reset_after: b_n (H,)


@pytest.mark.parametrize("D,H", [(1, 1), (3, 5), (300, 150), (150, 75)])
def test_sgu_is_smaller_than_gru(D, H):
    gru, sgu = get_cell("gru").parameter_count(D, H), get_cell("sgu").parameter_count(D, H)
    assert sgu * 3 * H == gru * (H + 2)  # ratio (H + 2) / 3H
    assert sgu <= gru and (H == 1 or sgu < gru)


@pytest.mark.parametrize("name", NAMES)
def test_init_range(name):
    H = 4
    cell = get_cell(name)(3, H)
    bound = 1 / math.sqrt(H)
    for pname, p in cell.named_parameters():
        data = p.numpy()
        if name == "lstm" and pname == "bias":
            data = data.copy()
            data[H : 2 * H] -= cell.forget_bias
        assert np.abs(data).max() <= bound, pname
        assert p.dtype == np.float64


def test_lstm_forget_bias_is_added_to_b_f():
    backend.manual_seed(5)
    plain = get_cell("lstm")(3, 4, forget_bias=0.0)
    backend.manual_seed(5)
    shifted = get_cell("lstm")(3, 4, forget_bias=2.5)
    delta = shifted.bias.numpy() - plain.bias.numpy()
    assert_close(delta, np.r_[np.zeros(4), np.full(4, 2.5), np.zeros(8)], 1e-15)
    assert get_cell("lstm")(3, 4).forget_bias == 1.0


# ---- bad input ----------------------------------------------------------------------------------
def good_state(name, B=2, H=3):
    return pack(name, [Tensor(np.zeros((B, H))) for _ in range(n_states(name))])


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs(name):
    cell = get_cell(name)(4, 3)
    x = Tensor(np.ones((5, 2, 4)))
    with pytest.raises(ValueError, match="time-major"):
        cell(Tensor(np.ones((5, 4))))
    with pytest.raises(ValueError, match="feature size 5"):
        cell(Tensor(np.ones((5, 2, 5))))
    with pytest.raises(ValueError, match="h0 must have shape"):
        cell(x, pack(name, [Tensor(np.zeros((3, 3)))] * n_states(name)))
    wrong_count = Tensor(np.zeros((2, 3))) if name == "lstm" else (Tensor(np.zeros((2, 3))),) * 2
    with pytest.raises(ValueError, match="h0 must be"):
        cell(x, wrong_count)
    with pytest.raises(TypeError, match="h0 has dtype"):
        cell(x, pack(name, [Tensor(np.zeros((2, 3), dtype=np.float32))] * n_states(name)))
    with pytest.raises(ValueError, match="mask must have shape"):
        cell(x, good_state(name), np.ones((5, 3), bool))
    with pytest.raises(TypeError, match="mask must be boolean"):
        cell(x, good_state(name), np.ones((5, 2), complex))
    with pytest.raises(ValueError, match="only 0 and 1"):
        cell(x, good_state(name), np.full((5, 2), 2))
    bad = np.ones((5, 2, 4))
    bad[2, 1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cell(Tensor(bad))
    with pytest.raises(TypeError, match="x has dtype float32 but the weights are float64"):
        cell(Tensor(np.ones((5, 2, 4), dtype=np.float32)))
    with pytest.raises(ValueError, match="positive"):
        get_cell(name)(0, 3)


def test_bad_options():
    with pytest.raises(ValueError, match="forget_bias must be a finite number"):
        get_cell("lstm")(3, 4, forget_bias=float("nan"))
    with pytest.raises(ValueError):
        get_cell("lstm")(3, 4, forget_bias="open")
    for name in ("gru", "mgu", "sgu"):
        with pytest.raises(TypeError):
            get_cell(name)(3, 4, forget_bias=1.0)


# ---- dtype and kernels --------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    backend.set_default_dtype(np.float32)
    cell = get_cell(name)(3, 4)
    x = Tensor(np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32), requires_grad=True)
    y, state = cell(x, None, lengths_mask([3, 2], 3))
    assert y.dtype == np.float32 and all(s.dtype == np.float32 for s in unpack(state))
    (y.sum() + unpack(state)[0].sum()).backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in cell.parameters())


@pytest.mark.parametrize("name", NAMES)
def test_reference_kernels_registered(name):
    module = getattr(minirec.kernels, name)
    for part in ("forward", "backward"):
        assert "reference" in kernel_names()[f"{name}_{part}"]
        assert get_kernel(f"{name}_{part}", np, kind="reference") is getattr(module, f"{name}_{part}")


def test_gru_reset_after_computes_equation_3_prime():
    """reset_after scales (h U_h + b_n) by r, after the product; reset-before scales h before it."""
    D, H, T, B = 3, 4, 5, 2
    cell = get_cell("gru")(D, H, reset_after=True)
    x = np.random.default_rng(3).normal(size=(T, B, D))
    W, U, b, b_n = (p.data for p in (cell.input_weight, cell.recurrent_weight, cell.bias, cell.recurrent_bias))
    sig = lambda a: 1 / (1 + np.exp(-a))
    h = np.zeros((B, H))
    for t in range(T):
        z = sig(x[t] @ W[:, :H] + h @ U[:, :H] + b[:H])
        r = sig(x[t] @ W[:, H : 2 * H] + h @ U[:, H : 2 * H] + b[H : 2 * H])
        h_tilde = np.tanh(x[t] @ W[:, 2 * H :] + b[2 * H :] + r * (h @ U[:, 2 * H :] + b_n))
        h = (1 - z) * h + z * h_tilde
    y, h_last = cell(Tensor(x))
    np.testing.assert_allclose(h_last.data, h, rtol=0, atol=1e-12)
    before = get_cell("gru")(D, H)
    for name in ("input_weight", "recurrent_weight", "bias"):
        getattr(before, name).data = getattr(cell, name).data.copy()
    assert np.abs(before(Tensor(x))[1].data - h).max() > 1e-3  # the two forms are different functions
    with pytest.raises(TypeError, match="reset_after"):
        get_cell("gru")(D, H, reset_after="yes")
