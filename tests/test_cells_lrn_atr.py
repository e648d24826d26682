"""ATR and the LRN family (LRN, gLRN, eLRN, oLRN): fused Function vs reference, gradcheck,
padding, parameter counts, input validation, and the LRN identities (eqs. 5 and 10)."""

from __future__ import annotations

import numpy as np
import pytest

import minirec
import minirec.cells.atr  # noqa: F401 - registers "atr"
import minirec.cells.lrn  # noqa: F401 - registers "lrn", "glrn", "elrn", "olrn"
from minirec.autograd.function import Tensor
from minirec.cells.base import RecurrentLayer, get_cell
from minirec.cells.lrn import lrn_step_jacobian, lrn_unrolled
from minirec.kernels import get_kernel

# Every cell and option combination under test: (name, options).
CONFIGS = [
    ("atr", {}),
    ("lrn", {}),
    ("lrn", {"activation": "identity"}),
    ("glrn", {}),
    ("glrn", {"activation": "identity"}),
    ("elrn", {}),
    ("elrn", {"activation": "identity"}),
    ("olrn", {}),
]
IDS = [name + ("-" + "-".join(str(v) for v in opts.values()) if opts else "") for name, opts in CONFIGS]


# ---- helpers ------------------------------------------------------------------------------------
def _randomise(module, seed, scale=0.8):
    """float64 parameters drawn at random, biases included (they are zero at init), so that every
    term of the backward is exercised."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = rng.uniform(-scale, scale, p.shape)
    return module


def make_cell(name, D, H, seed=0, **options):
    return _randomise(get_cell(name)(D, H, **options), seed)


def make_layer(name, D, H, seed=0, **options):
    return _randomise(RecurrentLayer(name, D, H, bidirectional=True, **options), seed)


def random_inputs(T, B, D, H, seed=1, h0=True):
    rng = np.random.default_rng(seed)
    x = Tensor(rng.normal(size=(T, B, D)), requires_grad=True)
    state = Tensor(rng.normal(size=(B, H)) * 0.5, requires_grad=True) if h0 else None
    return x, state


def random_mask(T, B, seed=2):
    rng = np.random.default_rng(seed)
    mask = (rng.uniform(size=(T, B)) < 0.7).astype(np.float64)
    mask[0, 0], mask[-1, -1] = 0.0, 0.0  # a padded step at each end, somewhere
    return mask


def grads_of(run, module, x, h0, seed=3):
    """Output, last state and every gradient (x, h0, parameters) of a random projection of both."""
    module.zero_grad()
    for t in (x, h0):
        if t is not None:
            t.grad = None
    y, h_last = run(x, h0)
    rng = np.random.default_rng(seed)
    loss = (y * Tensor(rng.normal(size=y.shape))).sum() + (h_last * Tensor(rng.normal(size=h_last.shape))).sum()
    loss.backward()
    grads = {"x": x.grad, "h0": None if h0 is None else h0.grad}
    grads.update({name: p.grad for name, p in module.named_parameters()})
    return y.data, h_last.data, grads


def assert_close(a, b, tol=1e-10, what=""):
    assert a is not None and b is not None, what
    np.testing.assert_allclose(a, b, rtol=0, atol=tol, err_msg=what)


# ---- fused == reference -----------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
@pytest.mark.parametrize("masked", [False, True])
def test_fused_matches_reference(name, options, masked):
    T, B, D, H = 6, 3, 4, 5
    cell = make_cell(name, D, H, **options)
    x, h0 = random_inputs(T, B, D, H)
    mask = random_mask(T, B) if masked else None
    y, h, g = grads_of(lambda a, s: cell(a, s, mask), cell, x, h0)
    y_ref, h_ref, g_ref = grads_of(lambda a, s: cell.run_reference(a, s, mask), cell, x, h0)
    assert_close(y, y_ref, what="y")
    assert_close(h, h_ref, what="h_last")
    assert set(g) == set(g_ref) and len(g) == 2 + len(cell.parameters())
    for key in g:
        assert_close(g[key], g_ref[key], what=f"grad {key}")
    if masked:
        assert np.all(y[mask == 0] == 0), "padded outputs must be zero"


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_zero_initial_state_default(name, options):
    T, B, D, H = 4, 2, 3, 3
    cell = make_cell(name, D, H, **options)
    x, _ = random_inputs(T, B, D, H, h0=False)
    y, h = cell(x)
    y0, h0 = cell(x, Tensor(np.zeros((B, H))))
    assert_close(y.data, y0.data)
    assert_close(h.data, h0.data)


# ---- gradcheck ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_gradcheck_with_h0(name, options):
    T, B, D, H = 4, 2, 3, 3
    cell = make_cell(name, D, H, **options)
    x, h0 = random_inputs(T, B, D, H)
    result = minirec.gradcheck(lambda x, h0, *ps: cell(x, h0), [x, h0, *cell.parameters()])
    assert result.passed and result.max_rel_error < 1e-6


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_gradcheck_with_mask(name, options):
    T, B, D, H = 5, 3, 2, 3
    cell = make_cell(name, D, H, **options)
    x, h0 = random_inputs(T, B, D, H)
    mask = random_mask(T, B)
    result = minirec.gradcheck(lambda x, h0, *ps: cell(x, h0, mask), [x, h0, *cell.parameters()])
    assert result.passed and result.max_rel_error < 1e-6


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_gradcheck_bidirectional(name, options):
    T, B, D, H = 4, 2, 2, 3
    layer = make_layer(name, D, H, **options)
    x, _ = random_inputs(T, B, D, H)
    h0 = Tensor(np.random.default_rng(5).normal(size=(2, B, H)) * 0.5, requires_grad=True)
    mask = np.ones((T, B))
    mask[3:, 1] = 0  # right padding in one sequence
    result = minirec.gradcheck(lambda x, h0, *ps: layer(x, h0, mask), [x, h0, *layer.parameters()])
    assert result.passed and result.max_rel_error < 1e-6


# ---- padding is inert ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_padding_is_inert_bidirectional(name, options):
    lengths = [5, 2, 4]
    T, B, D, H = max(lengths), len(lengths), 3, 2
    layer = make_layer(name, D, H, **options)
    rng = np.random.default_rng(7)
    x_data = rng.normal(size=(T, B, D))
    h0_data = rng.normal(size=(2, B, H)) * 0.5
    mask = np.array([[t < n for n in lengths] for t in range(T)], dtype=np.float64)
    w_y = rng.normal(size=(T, B, 2 * H))
    w_h = rng.normal(size=(2, B, H))

    def run(x_np, h0_np, m, wy, wh):
        x = Tensor(x_np.copy(), requires_grad=True)
        h0 = Tensor(h0_np.copy(), requires_grad=True)
        layer.zero_grad()
        y, h_last = layer(x, h0, m)
        ((y * Tensor(wy)).sum() + (h_last * Tensor(wh)).sum()).backward()
        return y.data, h_last.data, x.grad, h0.grad, {k: p.grad.copy() for k, p in layer.named_parameters()}

    y, h_last, gx, gh0, gp = run(x_data, h0_data, mask, w_y, w_h)
    assert np.all(y[mask == 0] == 0)
    assert np.all(gx[mask == 0] == 0), "no gradient may reach a padded input"
    summed = {k: np.zeros_like(v) for k, v in gp.items()}
    for b, n in enumerate(lengths):
        sl = slice(b, b + 1)
        y_b, h_b, gx_b, gh0_b, gp_b = run(x_data[:n, sl], h0_data[:, sl], None, w_y[:n, sl], w_h[:, sl])
        assert_close(y[:n, sl], y_b, what=f"y of sequence {b}")
        assert_close(h_last[:, sl], h_b, what=f"h_last of sequence {b}")
        assert_close(gx[:n, sl], gx_b, what=f"grad x of sequence {b}")
        assert_close(gh0[:, sl], gh0_b, what=f"grad h0 of sequence {b}")
        for k in summed:
            summed[k] += gp_b[k]
    for k in summed:
        assert_close(gp[k], summed[k], what=f"grad {k} (sum over sequences)")


# ---- parameter counts -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
@pytest.mark.parametrize("D,H", [(1, 1), (3, 5), (7, 2), (16, 32)])
def test_parameter_count_closed_form(name, options, D, H):
    cls = get_cell(name)
    assert cls(D, H, **options).count_parameters() == cls.parameter_count(D, H, **options)
    layer = RecurrentLayer(name, D, H, bidirectional=True, **options)
    assert layer.count_parameters() == 2 * cls.parameter_count(D, H, **options)


def test_parameter_count_formulas():
    D, H = 7, 4
    assert get_cell("atr").parameter_count(D, H) == D * H + H * H + 2 * H
    assert get_cell("lrn").parameter_count(D, H) == 3 * H * (D + 1)
    assert get_cell("glrn").parameter_count(D, H) == 2 * H * (D + 1)
    assert get_cell("elrn").parameter_count(D, H) == H * (D + 1)
    assert get_cell("olrn").parameter_count(D, H) == 4 * H * (D + 1)


def test_glorot_init_bounds_and_zero_biases():
    D, H = 6, 10
    minirec.manual_seed(0)
    lrn = get_cell("lrn")(D, H)
    assert lrn.input_weight.shape == (D, 3 * H) and np.all(lrn.bias.data == 0)
    assert np.abs(lrn.input_weight.data).max() <= np.sqrt(6 / (D + H))
    atr = get_cell("atr")(D, H)
    assert np.abs(atr.input_weight.data).max() <= np.sqrt(6 / (D + H))
    assert np.abs(atr.recurrent_weight.data).max() <= np.sqrt(3 / H)
    assert np.all(atr.bias.data == 0) and np.all(atr.recurrent_bias.data == 0)


# ---- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_bad_inputs(name, options):
    T, B, D, H = 3, 2, 4, 3
    cell = make_cell(name, D, H, **options)
    x = Tensor(np.zeros((T, B, D)))
    with pytest.raises(ValueError, match="time-major"):
        cell(Tensor(np.zeros((B, D))))
    with pytest.raises(ValueError, match="feature size"):
        cell(Tensor(np.zeros((T, B, D + 1))))
    with pytest.raises(ValueError, match="h0 must have shape"):
        cell(x, Tensor(np.zeros((B, H + 1))))
    with pytest.raises(TypeError, match="dtype"):
        cell(x, Tensor(np.zeros((B, H), dtype=np.float32)))
    with pytest.raises(ValueError, match="mask must have shape"):
        cell(x, None, np.ones((T, B + 1)))
    with pytest.raises(TypeError, match="mask must be boolean"):
        cell(x, None, np.ones((T, B), dtype=np.complex128))
    with pytest.raises(ValueError, match="only 0 and 1"):
        cell(x, None, np.full((T, B), 0.5))
    bad = np.zeros((T, B, D))
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cell(Tensor(bad))
    with pytest.raises(TypeError, match="floating"):
        cell(Tensor(np.zeros((T, B, D), dtype=np.int64)))


@pytest.mark.parametrize("name", ["lrn", "glrn", "elrn"])
def test_bad_activation(name):
    with pytest.raises(ValueError, match="activation"):
        get_cell(name)(3, 3, activation="relu")


def test_olrn_takes_no_activation():
    with pytest.raises(ValueError, match="no activation"):
        get_cell("olrn")(3, 3, activation="tanh")


def test_atr_takes_no_options():
    with pytest.raises(TypeError):
        get_cell("atr")(3, 3, activation="tanh")


def test_boolean_mask_equals_float_mask():
    cell = make_cell("lrn", 3, 2)
    x, h0 = random_inputs(4, 3, 3, 2)
    mask = random_mask(4, 3)
    y_f, h_f = cell(x, h0, mask)
    y_b, h_b = cell(x, h0, mask.astype(bool))
    assert_close(y_f.data, y_b.data)
    assert_close(h_f.data, h_b.data)


# ---- small shapes and dtype -----------------------------------------------------------------------
@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
@pytest.mark.parametrize("T,B", [(1, 1), (1, 3), (4, 1)])
def test_small_shapes(name, options, T, B):
    D, H = 2, 3
    cell = make_cell(name, D, H, **options)
    x, h0 = random_inputs(T, B, D, H)
    y, h, g = grads_of(lambda a, s: cell(a, s), cell, x, h0)
    y_ref, h_ref, g_ref = grads_of(lambda a, s: cell.run_reference(a, s), cell, x, h0)
    assert y.shape == (T, B, H) and h.shape == (B, H)
    assert_close(y, y_ref)
    assert_close(h, h_ref)
    for key in g:
        assert_close(g[key], g_ref[key], what=key)


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_float32_stays_float32(name, options):
    cell = get_cell(name)(3, 4, **options)  # float32 parameters by default
    x = Tensor(np.random.default_rng(0).normal(size=(3, 2, 3)).astype(np.float32), requires_grad=True)
    y, h = cell(x, None, np.array([[1, 1], [1, 0], [1, 0]], dtype=bool))
    assert y.dtype == np.float32 and h.dtype == np.float32
    (y.sum() + h.sum()).backward()
    assert x.grad.dtype == np.float32
    assert all(p.grad.dtype == np.float32 for p in cell.parameters())


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_weight_dtype_mismatch_is_an_error(name, options):
    cell = get_cell(name)(3, 4, **options)  # float32 weights
    with pytest.raises(TypeError, match="dtype"):
        cell(Tensor(np.zeros((2, 1, 3))))  # float64 input


@pytest.mark.parametrize("name,options", CONFIGS, ids=IDS)
def test_empty_sequence(name, options):
    cell = make_cell(name, 3, 2, **options)
    x = Tensor(np.zeros((0, 2, 3)), requires_grad=True)
    h0 = Tensor(np.ones((2, 2)), requires_grad=True)
    y, h = cell(x, h0)
    assert y.shape == (0, 2, 2)
    assert_close(h.data, h0.data)
    h.sum().backward()
    assert_close(h0.grad, np.ones((2, 2)))


def test_kernels_registered():
    for name in ("atr", "lrn", "glrn", "elrn", "olrn"):
        assert callable(get_kernel(f"{name}_forward", np, kind="reference"))
        assert callable(get_kernel(f"{name}_backward", np, kind="reference"))


# ---- the LRN identities ---------------------------------------------------------------------------
def test_lrn_unrolled_matches_recurrence():
    """Eq. (5): with g = identity and h_0 = 0, h_t = Σ_k i_k ⊙ Π f ⊙ v_k."""
    T, B, D, H = 6, 3, 4, 5
    cell = make_cell("lrn", D, H, activation="identity")
    x, _ = random_inputs(T, B, D, H)
    z = (x @ cell.input_weight + cell.bias).data
    h0 = np.zeros((B, H))
    h, i, f = get_kernel("lrn_forward", np, kind="reference")(z, h0, None, activation="identity")
    v = z[..., 2 * H:]
    h_unrolled, weights = lrn_unrolled(i, f, v, return_weights=True)
    assert_close(h_unrolled, h, tol=1e-12)
    y, _ = cell(x)
    assert_close(h_unrolled, y.data, tol=1e-12)
    assert np.all(weights[np.triu_indices(T, 1)] == 0), "no weight on future tokens"
    assert_close(weights[np.arange(T), np.arange(T)], i, tol=0)  # a token's own weight is i_t


@pytest.mark.parametrize("activation", ["tanh", "identity"])
def test_lrn_step_jacobian_eq10(activation):
    """Eq. (10): ∂h_t/∂h_{t−1} is diagonal with entries (σ′_i v − h σ′_f + f) g′, checked against
    central differences of one step of the fused LRN."""
    B, D, H = 2, 3, 4
    rng = np.random.default_rng(11)
    cell = make_cell("lrn", D, H, activation=activation)
    x = Tensor(rng.normal(size=(1, B, D)))
    h_prev = rng.normal(size=(B, H))
    z = (x @ cell.input_weight + cell.bias).data[0]
    q, k, v = z[:, :H], z[:, H:2 * H], z[:, 2 * H:]
    analytic = lrn_step_jacobian(q, k, v, h_prev, activation=activation)

    def step(h):
        with minirec.no_grad():
            return cell(x, Tensor(h))[1].data

    eps = 1e-6
    for b in range(B):
        numeric = np.empty((H, H))  # numeric[j, m] = ∂h_t[b, j] / ∂h_{t−1}[b, m]
        for m in range(H):
            plus, minus = h_prev.copy(), h_prev.copy()
            plus[b, m] += eps
            minus[b, m] -= eps
            numeric[:, m] = (step(plus)[b] - step(minus)[b]) / (2 * eps)
        assert_close(numeric, np.diag(analytic[b]), tol=1e-8, what=f"example {b}")


def test_lrn_backward_carries_eq10():
    """With ȳ = 0 before the last step, ∂L/∂h_0 of a one-step run is ∂L/∂h_1 ⊙ eq. (10)."""
    B, D, H = 3, 2, 4
    cell = make_cell("lrn", D, H)
    x, h0 = random_inputs(1, B, D, H)
    _, h_last = cell(x, h0)
    upstream = np.random.default_rng(4).normal(size=(B, H))
    (h_last * Tensor(upstream)).sum().backward()
    z = (x @ cell.input_weight + cell.bias).data[0]
    jac = lrn_step_jacobian(z[:, :H], z[:, H:2 * H], z[:, 2 * H:], h0.data)
    assert_close(h0.grad, upstream * jac, tol=1e-12)
