"""minGRU and minLSTM (Feng et al. 2024): fused Function vs reference, the three scan modes,
the log-space model, gradients, padding, parameter counts and input checks. float64 throughout
(except the dtype test), small sizes."""

from __future__ import annotations

import numpy as np
import pytest

import minirec
import minirec.cells.mingru
import minirec.cells.minlstm  # noqa: F401 - registers "minlstm"
from minirec import backend
from minirec.autograd.function import Tensor
from minirec.cells.base import RecurrentLayer, get_cell
from minirec.kernels import get_kernel, minrnn

CELLS = ["mingru", "minlstm"]
# (mode, g_activation): every distinct variant of the cells.
VARIANTS = [("sequential", None), ("parallel", None), ("sequential", True), ("parallel", True), ("log", None)]
VARIANT_IDS = ["sequential", "parallel", "sequential-g", "parallel-g", "log"]
T, B, D, H = 5, 3, 4, 3
TOL = 1e-10


@pytest.fixture
def reference_kernels(monkeypatch):
    """The modes choose among the reference solvers; the numba CPU kernels run one loop for every
    mode, so comparing modes on them would compare a loop with itself."""
    monkeypatch.setenv("MINIREC_KERNELS", "reference")


def assert_other_arithmetic(a, b):
    """The two runs really took different solvers (not one loop twice): not bit-identical."""
    assert not np.array_equal(a[0], b[0])


@pytest.fixture(autouse=True)
def float64_default():
    previous = backend.get_default_dtype()
    backend.set_default_dtype(np.float64)
    minirec.manual_seed(1234)
    yield
    backend.set_default_dtype(previous)


# ---- helpers --------------------------------------------------------------------------------------
def make_cell(name, mode="parallel", g=None, seed=7, input_size=D, hidden_size=H):
    """The same weights for every mode: the seed alone decides them."""
    minirec.manual_seed(seed)
    return get_cell(name)(input_size, hidden_size, mode=mode, g_activation=g)


def make_inputs(seed=0, t=T, b=B, d=D, h=H, positive_h0=True):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(t, b, d)) * 1.5
    h0 = rng.uniform(0.2, 1.5, size=(b, h)) if positive_h0 else rng.normal(size=(b, h))
    return x, h0


def lengths_mask(lengths, t=T):
    return (np.arange(t)[:, None] < np.asarray(lengths)[None, :]).astype(np.float64)


def run_with_grads(module, x, h0, mask, reference=False, seed=3):
    """Outputs, last state and the gradients of a random projection of (y, h_last)
    with respect to x, h0 and every parameter (by name)."""
    module.zero_grad()
    xt = Tensor(x.copy(), requires_grad=True)
    ht = None if h0 is None else Tensor(h0.copy(), requires_grad=True)
    if reference:
        y, h_last = module.run_reference(xt, ht, mask)
    else:
        y, h_last = module(xt, ht, mask)
    rng = np.random.default_rng(seed)
    loss = (y * Tensor(rng.normal(size=y.shape))).sum() + (h_last * Tensor(rng.normal(size=h_last.shape))).sum()
    loss.backward()
    grads = {"x": xt.grad}
    if ht is not None:
        grads["h0"] = ht.grad
    for name, p in module.named_parameters():
        grads[name] = p.grad
    return y.numpy(), h_last.numpy(), grads


def assert_same(a, b, tol=TOL):
    ya, ha, ga = a
    yb, hb, gb = b
    np.testing.assert_allclose(ya, yb, rtol=0, atol=tol)
    np.testing.assert_allclose(ha, hb, rtol=0, atol=tol)
    assert set(ga) == set(gb)
    for name in ga:
        assert ga[name] is not None and gb[name] is not None, name
        np.testing.assert_allclose(ga[name], gb[name], rtol=0, atol=tol, err_msg=name)


# ---- fused == reference, and the modes agree ----------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("mode", "g"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("masked", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=default", "h0"])
@pytest.mark.parametrize("kernels", ["auto", "reference"])  # the numba loop, and each mode's own solver
def test_fused_matches_reference(name, mode, g, masked, with_h0, kernels, monkeypatch):
    monkeypatch.setenv("MINIREC_KERNELS", kernels)
    cell = make_cell(name, mode, g)
    x, h0 = make_inputs(positive_h0=mode == "log")
    mask = lengths_mask([5, 2, 4]) if masked else None
    h0 = h0 if with_h0 else None
    assert_same(run_with_grads(cell, x, h0, mask), run_with_grads(cell, x, h0, mask, reference=True))


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("g", [None, True], ids=["plain", "g"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "padded"])
def test_parallel_equals_sequential(name, g, masked, reference_kernels):
    x, h0 = make_inputs(positive_h0=False)
    mask = lengths_mask([3, 5, 1]) if masked else None
    sequential = run_with_grads(make_cell(name, "sequential", g), x, h0, mask)
    parallel = run_with_grads(make_cell(name, "parallel", g), x, h0, mask)
    assert_same(sequential, parallel)
    assert_other_arithmetic(sequential, parallel)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("masked", [False, True], ids=["full", "padded"])
@pytest.mark.parametrize("with_h0", [False, True], ids=["h0=default", "h0"])
def test_log_mode_equals_sequential_with_g(name, masked, with_h0, reference_kernels):
    x, h0 = make_inputs(seed=4)
    mask = lengths_mask([5, 1, 3]) if masked else None
    h0 = h0 if with_h0 else None
    log = run_with_grads(make_cell(name, "log"), x, h0, mask)
    for mode in ("sequential", "parallel"):
        other = run_with_grads(make_cell(name, mode, True), x, h0, mask)
        assert_same(log, other)
        assert_other_arithmetic(log, other)


@pytest.mark.parametrize("name", CELLS)
def test_log_mode_is_a_different_model(name):
    """Without g the sequential mode computes another function than log mode (documented)."""
    x, h0 = make_inputs()
    y_log, _ = make_cell(name, "log")(Tensor(x), Tensor(h0))
    y_plain, _ = make_cell(name, "sequential")(Tensor(x), Tensor(h0))
    assert np.abs(y_log.numpy() - y_plain.numpy()).max() > 1e-3
    assert (y_log.numpy() > 0).all()  # the log model's states stay positive


@pytest.mark.parametrize("name", CELLS)
def test_matches_independent_numpy_loop(name):
    """The cells against the paper's equations written once more in plain NumPy."""
    cell = make_cell(name, "parallel")
    x, h0 = make_inputs(positive_h0=False)
    W, b = cell.weight.data, cell.bias.data
    u = x @ W + b
    sig = lambda v: 1 / (1 + np.exp(-v))
    h, ys = h0.copy(), []
    for t in range(T):
        if name == "mingru":
            z = sig(u[t, :, :H])
            h = (1 - z) * h + z * u[t, :, H:]
        else:
            f, i = sig(u[t, :, :H]), sig(u[t, :, H : 2 * H])
            h = f / (f + i) * h + i / (f + i) * u[t, :, 2 * H :]
        ys.append(h)
    y, h_last = cell(Tensor(x), Tensor(h0))
    np.testing.assert_allclose(y.numpy(), np.stack(ys), rtol=0, atol=TOL)
    np.testing.assert_allclose(h_last.numpy(), h, rtol=0, atol=TOL)


# ---- gradcheck ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("mode", "g"), VARIANTS, ids=VARIANT_IDS)
def test_gradcheck_with_h0_and_mask(name, mode, g):
    cell = make_cell(name, mode, g, input_size=3, hidden_size=2)
    x, h0 = make_inputs(t=4, b=2, d=3, h=2, positive_h0=mode == "log")
    mask = lengths_mask([4, 2], t=4)
    xt, ht = Tensor(x, requires_grad=True), Tensor(h0, requires_grad=True)
    minirec.gradcheck(lambda x_, h_, w_, b_: cell(x_, h_, mask), [xt, ht, cell.weight, cell.bias])


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("mode", "g"), VARIANTS, ids=VARIANT_IDS)
def test_gradcheck_bidirectional(name, mode, g):
    minirec.manual_seed(11)
    layer = RecurrentLayer(name, 3, 2, bidirectional=True, mode=mode, g_activation=g)
    rng = np.random.default_rng(5)
    xt = Tensor(rng.normal(size=(3, 2, 3)), requires_grad=True)
    ht = Tensor(rng.uniform(0.2, 1.5, size=(2, 2, 2)), requires_grad=True)
    mask = lengths_mask([3, 2], t=3)
    params = list(layer.parameters())
    minirec.gradcheck(lambda x_, h_, *p: layer(x_, h_, mask), [xt, ht, *params])


# ---- padding is inert --------------------------------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("mode", "g"), [("sequential", None), ("parallel", None), ("log", None)],
                         ids=["sequential", "parallel", "log"])
def test_padding_is_inert_bidirectional(name, mode, g):
    minirec.manual_seed(21)
    layer = RecurrentLayer(name, D, H, bidirectional=True, mode=mode, g_activation=g)
    lengths = [5, 2, 3]
    x, _ = make_inputs(seed=8)
    rng = np.random.default_rng(9)
    h0 = rng.uniform(0.2, 1.5, size=(2, B, H))
    w_y = rng.normal(size=(T, B, 2 * H))
    w_h = rng.normal(size=(2, B, H))

    def run(x_, h0_, mask, wy, wh):
        layer.zero_grad()
        xt, ht = Tensor(x_.copy(), requires_grad=True), Tensor(h0_.copy(), requires_grad=True)
        y, h_last = layer(xt, ht, mask)
        ((y * Tensor(wy)).sum() + (h_last * Tensor(wh)).sum()).backward()
        return y.numpy(), h_last.numpy(), xt.grad, ht.grad, [p.grad.copy() for p in layer.parameters()]

    y, h_last, gx, gh, gp = run(x, h0, lengths_mask(lengths), w_y, w_h)
    param_sum = [np.zeros_like(p) for p in gp]
    for b, L in enumerate(lengths):
        sl = slice(b, b + 1)
        y1, h1, gx1, gh1, gp1 = run(x[:L, sl], h0[:, sl], None, w_y[:L, sl], w_h[:, sl])
        np.testing.assert_allclose(y[:L, sl], y1, rtol=0, atol=TOL)
        assert not y[L:, b].any()
        np.testing.assert_allclose(h_last[:, sl], h1, rtol=0, atol=TOL)
        np.testing.assert_allclose(gx[:L, sl], gx1, rtol=0, atol=TOL)
        assert not gx[L:, b].any()
        np.testing.assert_allclose(gh[:, sl], gh1, rtol=0, atol=TOL)
        for acc, g1 in zip(param_sum, gp1):
            acc += g1
    for g_batch, g_alone in zip(gp, param_sum):
        np.testing.assert_allclose(g_batch, g_alone, rtol=0, atol=TOL)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("mode", ["sequential", "parallel", "log"])
def test_fully_padded_sequence_keeps_h0(name, mode):
    x, h0 = make_inputs()
    mask = lengths_mask([5, 0, 2])
    y, h_last = make_cell(name, mode)(Tensor(x), Tensor(h0), mask)
    np.testing.assert_allclose(h_last.numpy()[1], h0[1], rtol=0, atol=1e-14)
    assert not y.numpy()[:, 1].any()


# ---- parameter counts ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize(("d", "h"), [(1, 1), (4, 3), (7, 2), (3, 8)])
@pytest.mark.parametrize("mode", ["sequential", "log"])
def test_parameter_count(name, d, h, mode):
    cls = get_cell(name)
    assert cls(d, h, mode=mode).count_parameters() == cls.parameter_count(d, h, mode=mode)
    blocks = 2 if name == "mingru" else 3
    assert cls.parameter_count(d, h) == blocks * h * (d + 1)
    layer = RecurrentLayer(name, d, h, bidirectional=True, mode=mode)
    assert layer.count_parameters() == 2 * cls.parameter_count(d, h)


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
def test_bad_inputs(name):
    cell = make_cell(name, "parallel")
    x, h0 = make_inputs()
    with pytest.raises(ValueError, match="time-major"):
        cell(Tensor(x[0]))
    with pytest.raises(ValueError, match="feature size"):
        cell(Tensor(x[..., :2]))
    with pytest.raises(ValueError, match="h0 must have shape"):
        cell(Tensor(x), Tensor(h0[:, :2]))
    with pytest.raises(ValueError, match="mask must have shape"):
        cell(Tensor(x), None, np.ones((T, B + 1)))
    with pytest.raises(TypeError, match="mask must be boolean"):
        cell(Tensor(x), None, np.ones((T, B), dtype=complex))
    with pytest.raises(ValueError, match="only 0 and 1"):
        cell(Tensor(x), None, np.full((T, B), 0.5))
    bad = x.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cell(Tensor(bad))
    with pytest.raises(TypeError, match="dtype"):
        cell(Tensor(x), Tensor(h0.astype(np.float32)))


@pytest.mark.parametrize("name", CELLS)
def test_option_validation(name):
    cls = get_cell(name)
    with pytest.raises(ValueError, match="mode must be one of"):
        cls(D, H, mode="fast")
    with pytest.raises(ValueError, match="always applies g"):
        cls(D, H, mode="log", g_activation=False)
    with pytest.raises(TypeError, match="g_activation"):
        cls(D, H, mode="sequential", g_activation="yes")
    with pytest.raises(ValueError, match="positive"):
        cls(0, H)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("bad_value", [0.0, -0.3])
def test_log_mode_rejects_non_positive_h0(name, bad_value):
    cell = make_cell(name, "log")
    x, h0 = make_inputs()
    h0[1, 2] = bad_value
    for run in (cell, cell.run_reference):
        with pytest.raises(ValueError, match=r"mode='log' needs an initial state h0 > 0"):
            run(Tensor(x), Tensor(h0))
    layer = RecurrentLayer(name, D, H, bidirectional=True, mode="log")
    with pytest.raises(ValueError, match="h0 > 0"):
        layer(Tensor(x), Tensor(np.stack([np.ones_like(h0), h0])))
    # Outside log mode the same h0 is fine.
    make_cell(name, "sequential", True)(Tensor(x), Tensor(h0))


@pytest.mark.parametrize("name", CELLS)
def test_default_state(name):
    """0 without g; g(0) = 0.5 where g applies (log mode, g_activation=True)."""
    x, _ = make_inputs(t=0)
    for mode, g, fill in [("parallel", None, 0.0), ("sequential", True, 0.5), ("log", None, 0.5)]:
        y, h_last = make_cell(name, mode, g)(Tensor(x))
        assert y.shape == (0, B, H)
        np.testing.assert_array_equal(h_last.numpy(), np.full((B, H), fill))


# ---- small shapes, dtype, stability, kernels -----------------------------------------------------
@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("mode", ["sequential", "parallel", "log"])
@pytest.mark.parametrize(("t", "b"), [(1, 1), (1, 3), (4, 1)])
def test_t1_b1(name, mode, t, b):
    cell = make_cell(name, mode)
    x, h0 = make_inputs(t=t, b=b)
    assert_same(run_with_grads(cell, x, h0, None), run_with_grads(cell, x, h0, None, reference=True))


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("mode", ["sequential", "parallel", "log"])
def test_empty_sequence_gradient(name, mode):
    cell = make_cell(name, mode)
    x, h0 = make_inputs(t=0)
    y, h_last, grads = run_with_grads(cell, x, h0, None)
    np.testing.assert_array_equal(h_last, h0)
    assert grads["x"].shape == (0, B, D)
    assert not grads["weight"].any()


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("mode", ["sequential", "parallel", "log"])
def test_float32_stays_float32(name, mode):
    backend.set_default_dtype(np.float32)
    cell = make_cell(name, mode)
    x, h0 = make_inputs()
    xt = Tensor(x.astype(np.float32), requires_grad=True)
    y, h_last = cell(xt, Tensor(h0.astype(np.float32)), lengths_mask([5, 3, 1]).astype(bool))
    assert y.dtype == np.float32 and h_last.dtype == np.float32
    (y.sum() + h_last.sum()).backward()
    assert xt.grad.dtype == np.float32 and cell.weight.grad.dtype == np.float32
    y64, _ = make_cell(name, "sequential", mode == "log" or None)(
        Tensor(x.astype(np.float32)), Tensor(h0.astype(np.float32)), lengths_mask([5, 3, 1]))
    np.testing.assert_allclose(y.numpy(), y64.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", CELLS)
def test_log_mode_saturated_gates(name, reference_kernels):
    """Huge pre-activations: the softplus forms keep every mode finite, and they still agree."""
    cell = make_cell(name, "log", input_size=2, hidden_size=2)
    cell.weight.data *= 200
    x, h0 = make_inputs(t=6, d=2, h=2)
    log = run_with_grads(cell, x, h0, None)
    seq_cell = make_cell(name, "sequential", True, input_size=2, hidden_size=2)
    seq_cell.weight.data *= 200
    sequential = run_with_grads(seq_cell, x, h0, None)
    for part in (log[0], log[1], *log[2].values()):
        assert np.isfinite(part).all()
    np.testing.assert_allclose(log[0], sequential[0], rtol=1e-9, atol=1e-9)


def test_g_function():
    xp = np
    v = np.array([-30.0, -2.0, -1e-12, 0.0, 1e-12, 0.7, 40.0])
    g = minrnn.g(xp, v)
    assert (g > 0).all()
    np.testing.assert_allclose(g[2:5], 0.5, atol=1e-11)  # continuous at 0
    np.testing.assert_allclose(minrnn.log_g(xp, v), np.log(g), rtol=1e-12, atol=0)
    eps = 1e-6
    for point in (-2.0, 0.7):
        numeric = (minrnn.g(xp, np.array(point + eps)) - minrnn.g(xp, np.array(point - eps))) / (2 * eps)
        np.testing.assert_allclose(minrnn.g_prime(xp, np.array(point)), numeric, rtol=1e-8)


def test_kernels_registered():
    for kernel in ("mingru_forward", "mingru_backward", "minlstm_forward", "minlstm_backward"):
        assert callable(get_kernel(kernel, np, kind="reference"))
    with pytest.raises(ValueError, match="mode must be one of"):
        minrnn.mingru_forward(np.zeros((1, 1, 1)), np.zeros((1, 1, 1)), np.ones((1, 1)), None, "blelloch")
