"""The numba CPU kernels (minirec.kernels.cpu) against the reference loops, and the dispatch.

Every ``cpu`` kernel is held to its ``reference`` on random inputs, forward and backward (the
backward of both fed the reference forward's saved arrays), in float32 (rtol 1e-5) and float64
(1e-12), with and without mask and with a random or zero initial state, for odd sizes: T = 1,
B = 1, H not a multiple of the SIMD width, T = 0, B = 0, and sizes large enough to be split
across threads. numba compiles each kernel on first use (cached on disk afterwards).
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

pytest.importorskip("numba")

from minirec.kernels import get_kernel, kernel_names  # noqa: E402
from minirec.kernels.cpu import _common  # noqa: E402

RTOL = {np.float32: 1e-5, np.float64: 1e-12}
# (T, B, H): one step of one sequence; odd H; empty time axis; empty batch; and for the kernels that run on
# threads (the elementwise ones) a size they split, a row cut into channel ranges.
SIZES = [(1, 1, 5), (6, 3, 37), (0, 2, 3), (3, 0, 4)]
SPLIT_SIZE = (40, 1, 450)
CPU_KERNELS = sorted(
    f"{name}_{part}"
    for name in ("sru", "qrnn", "lrn", "glrn", "elrn", "olrn", "mingru", "minlstm", "linear_scan", "gru", "mgu", "sgu",
                 "lstm", "atr")
    for part in ("forward", "backward")
)


def assert_close(out, ref, rtol, what):
    """Relative agreement with an absolute floor at rtol · max|ref|; same shape and dtype."""
    if ref is None:
        assert out is None, what
        return
    assert out.shape == ref.shape and out.dtype == ref.dtype, (what, out.shape, ref.shape, out.dtype, ref.dtype)
    if ref.size:
        scale = max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(out, ref, rtol=rtol, atol=rtol * scale, err_msg=what)


# ---- one builder per kernel family: (forward name, args, kwargs, backward args from the forward) ----
def _sru(rng, T, B, H, new, mask, h0, skip_in_U, dropout):
    U = new(T, B, (4 if skip_in_U else 3) * H)
    x_skip = U[:, :, 3 * H :] if skip_in_U else new(T, B, H)
    v_f, v_r, b_f, b_r = (new(H) for _ in range(4))
    drop = (rng.random((B, H)) > 0.3).astype(U.dtype) / U.dtype.type(0.7) if dropout else None
    fwd = (U, x_skip, v_f, v_r, b_f, b_r, h0, mask, drop, 1.7)

    def bwd(out):
        h, c, f, r = out
        return (new(T, B, H), new(B, H), U, x_skip, v_f, v_r, h0, c, f, r, mask, drop, 1.7), {}

    return "sru", fwd, {}, bwd


def _qrnn(rng, T, B, H, new, mask, h0, highway):
    U = new(T, B, (4 if highway == "in U" else 3) * H)
    x_skip = {None: None, "in U": U[:, :, 3 * H :], "separate": new(T, B, H)}[highway]
    fwd = (U, new(3 * H), h0, x_skip, mask)

    def bwd(out):
        h, c, z, f, o = out
        return (new(T, B, H), new(B, H), h0, x_skip, c, z, f, o, mask), {}

    return "qrnn", fwd, {}, bwd


def _lrn(rng, T, B, H, new, mask, h0, variant, activation):
    n = {"lrn": 3, "glrn": 2, "elrn": 1, "olrn": 4}[variant]
    z = new(T, B, n * H)
    options = {} if variant == "olrn" else {"activation": activation}

    def bwd(out):
        return (z, h0, *out, mask, new(T, B, H), new(B, H)), options

    return variant, (z, h0, mask), options, bwd


def _minrnn(rng, T, B, H, new, mask, h0, cell, mode, g_activation):
    n = 2 if cell == "mingru" else 3
    u = new(T, B, (n + 1) * H)  # the blocks are column views of u, as the cells pass them
    gates = [u[:, :, j * H : (j + 1) * H] for j in range(n)]
    if mode == "log":  # log h0 must exist
        h0 = np.abs(h0) + h0.dtype.type(0.5)
    fwd = (*gates, h0, mask, mode, g_activation)

    def bwd(out):
        h, saved = out
        if cell == "mingru":
            return (new(T, B, H), h, h0, saved, gates[1], mask, mode, g_activation), {}
        return (new(T, B, H), h, h0, saved, *gates, mask, mode, g_activation), {}

    return cell, fwd, {}, bwd


def _scan(rng, T, B, H, new, mask, h0):
    """FOFE's use: a = α, or with a mask the broadcast (not contiguous) m α + 1 − m; no h0 = zeros."""
    x = new(T, B, H)
    if mask is None:
        a = np.full(x.shape, 0.7, x.dtype)
    else:
        a = np.broadcast_to((mask * x.dtype.type(0.7) + (1 - mask))[:, :, None], x.shape)
    h0 = None if not h0.any() else h0

    def bwd(out):
        return (a, out, h0, new(T, B, H)), {}

    return "linear_scan", (a, x, h0), {}, bwd


def _matrix(rng, T, B, H, new, mask, h0, cell):
    width = {"gru": 3 * H, "mgu": 2 * H, "sgu": H + 2, "lstm": 4 * H, "atr": H}[cell]
    x_proj = new(T, B, width)
    U = new(H, width) / x_proj.dtype.type(np.sqrt(H))
    if cell == "lstm":
        c0 = h0[::-1].copy()
        return "lstm", (x_proj, U, h0, c0, mask), {}, lambda out: (
            (U, h0, c0, mask, *out, new(T, B, H), new(B, H), new(B, H)), {})
    if cell == "atr":
        return "atr", (x_proj, U, new(H), h0, mask), {}, lambda out: (
            (x_proj, U, h0, *out, mask, new(T, B, H), new(B, H)), {})
    return cell, (x_proj, U, h0, mask), {}, lambda out: ((U, h0, mask, *out, new(T, B, H), new(B, H)), {})


CASES = {
    "sru": (_sru, {"skip_in_U": False, "dropout": False}),
    "sru-skip_in_U-dropout": (_sru, {"skip_in_U": True, "dropout": True}),
    "qrnn": (_qrnn, {"highway": None}),
    "qrnn-highway_in_U": (_qrnn, {"highway": "in U"}),
    "qrnn-highway_separate": (_qrnn, {"highway": "separate"}),
    **{f"{v}-{a}": (_lrn, {"variant": v, "activation": a})
       for v in ("lrn", "glrn", "elrn") for a in ("tanh", "identity")},
    "olrn": (_lrn, {"variant": "olrn", "activation": None}),
    **{f"{c}-{m}-g={g}": (_minrnn, {"cell": c, "mode": m, "g_activation": g})
       for c in ("mingru", "minlstm") for m, g in (("sequential", False), ("parallel", True), ("log", True))},
    "linear_scan": (_scan, {}),
    **{c: (_matrix, {"cell": c}) for c in ("gru", "mgu", "sgu", "lstm", "atr")},
}


@pytest.mark.parametrize(
    "case, size",
    [(case, size) for case in CASES for size in SIZES + ([] if CASES[case][0] is _matrix else [SPLIT_SIZE])],
    ids=lambda p: "T{}-B{}-H{}".format(*p) if isinstance(p, tuple) else p,
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_cpu_kernel_matches_reference(case, size, dtype):
    builder, options = CASES[case]
    T, B, H = size
    rtol = RTOL[dtype]
    for with_mask in (False, True):
        for zero_state in (False, True):
            rng = np.random.default_rng([T, B, H, int(with_mask), int(zero_state)])
            new = lambda *shape: rng.standard_normal(shape).astype(dtype)  # noqa: B023
            mask = (rng.random((T, B)) > 0.3).astype(dtype) if with_mask else None
            if mask is not None and B:
                mask[:, 0] = 1  # one full-length sequence, the others padded anywhere
            h0 = np.zeros((B, H), dtype) if zero_state else new(B, H)
            name, fwd_args, fwd_kwargs, backward_args = builder(rng, T, B, H, new, mask, h0, **options)
            what = f"{case} {np.dtype(dtype).name} T={T} B={B} H={H} mask={with_mask} zero_state={zero_state}"
            reference = get_kernel(f"{name}_forward", np, kind="reference")(*fwd_args, **fwd_kwargs)
            ours = get_kernel(f"{name}_forward", np, kind="cpu")(*fwd_args, **fwd_kwargs)
            if name == "linear_scan":  # the one kernel returning a single array
                assert_close(ours, reference, rtol, f"{what}: forward")
            else:
                assert len(ours) == len(reference)
                for k, (out, ref) in enumerate(zip(ours, reference)):
                    assert_close(out, ref, rtol, f"{what}: forward output {k}")
            bwd_args, bwd_kwargs = backward_args(reference)
            reference = get_kernel(f"{name}_backward", np, kind="reference")(*bwd_args, **bwd_kwargs)
            ours = get_kernel(f"{name}_backward", np, kind="cpu")(*bwd_args, **bwd_kwargs)
            assert len(ours) == len(reference)
            for k, (out, ref) in enumerate(zip(ours, reference)):
                assert_close(out, ref, rtol, f"{what}: backward output {k}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_min_rnn_gates_stay_finite_and_exact_for_extreme_pre_activations(dtype):
    """minLSTM's f′ = f/(f + i) and minGRU's σ(±k) where f and i underflow or saturate."""
    k = np.array([-120, -90, -40, -1, 0, 1, 40, 90, 120], dtype)
    k_f, k_i = (a.reshape(-1, 1, 1).astype(dtype) for a in np.meshgrid(k, k))
    x = np.ones_like(k_f)
    h0 = np.ones((1, 1), dtype)
    for kind in ("reference", "cpu"):
        h, f_prime = get_kernel("minlstm_forward", np, kind=kind)(k_f.reshape(-1, 1, 1), k_i.reshape(-1, 1, 1),
                                                                  x.reshape(-1, 1, 1), h0, None, "sequential")
        assert np.isfinite(h).all() and np.isfinite(f_prime).all()
        if kind == "reference":
            expected = f_prime
    assert_close(f_prime, expected, RTOL[dtype], "minlstm f′")
    ours = get_kernel("mingru_forward", np, kind="cpu")(k_f, x, np.zeros((1, 1), dtype), None, "sequential")
    reference = get_kernel("mingru_forward", np, kind="reference")(k_f, x, np.zeros((1, 1), dtype), None, "sequential")
    for out, ref in zip(ours, reference):
        assert_close(out, ref, RTOL[dtype], "mingru")


@pytest.mark.parametrize("case", ["sru-skip_in_U-dropout", "qrnn-highway_separate", "lrn-tanh", "olrn",
                                  "mingru-log-g=True", "minlstm-parallel-g=True", "linear_scan"])
@pytest.mark.parametrize("B", [2, 7])
def test_any_split_across_threads_gives_the_same_result(case, B, monkeypatch):
    """Rows split into groups (B ≥ tiles) or rows cut into channel ranges (B < tiles), on 3
    threads: the columns are independent, so the result is the one of one thread, bit for bit."""
    T, H = 9, 300
    builder, options = CASES[case]

    def run():
        rng = np.random.default_rng(0)
        new = lambda *shape: rng.standard_normal(shape).astype(np.float32)
        mask = (rng.random((T, B)) > 0.3).astype(np.float32)
        name, fwd_args, fwd_kwargs, backward_args = builder(rng, T, B, H, new, mask, new(B, H), **options)
        forward = get_kernel(f"{name}_forward", np, kind="cpu")(*fwd_args, **fwd_kwargs)
        bwd_args, bwd_kwargs = backward_args(forward)
        backward = get_kernel(f"{name}_backward", np, kind="cpu")(*bwd_args, **bwd_kwargs)
        return [forward, *backward] if name == "linear_scan" else [*forward, *backward]

    single = run()
    monkeypatch.setitem(_common.THREADS, "count", 3)
    monkeypatch.setattr(_common, "MIN_TILE_NS", 1)  # split even these small sizes
    assert len(_common.tiles(B, H, _common.TILES_PER_THREAD * 3)) > 3
    for out, ref in zip(run(), single):
        if ref is not None:
            np.testing.assert_array_equal(out, ref)


def test_tiles_cover_every_column_once():
    for B, H, threads in [(1, 5, 4), (2, 300, 3), (7, 40, 3), (3, 64, 8), (0, 4, 2), (5, 1, 2)]:
        seen = np.zeros((B, H), int)
        for b0, b1, j0, j1 in _common.tiles(B, H, threads):
            seen[b0:b1, j0:j1] += 1
        assert (seen == 1).all(), (B, H, threads)


def test_columns_reads_blocks_in_place_and_copies_anything_else():
    u = np.arange(2 * 3 * 10, dtype=np.float64).reshape(2, 3, 10)
    for view in (u[..., 4:7], u[..., :5], u[..., 5:]):
        parent, offset = _common.columns(view, np.float64)
        assert np.shares_memory(parent, u) and parent.shape[:2] == u.shape[:2]
        np.testing.assert_array_equal(parent[..., offset : offset + view.shape[-1]], view)
    for view in (u[..., ::2], u[:, ::2, :3], u[::-1, :, :3], u.astype(np.float32)[..., :3]):
        parent, offset = _common.columns(view, np.float64)
        assert offset == 0 and parent.flags.c_contiguous and parent.dtype == np.float64
        np.testing.assert_array_equal(parent, view)


def test_integer_inputs_are_refused():
    z = np.zeros((2, 1, 3), dtype=np.int64)
    with pytest.raises(TypeError, match="float32 and float64"):
        get_kernel("elrn_forward", np, kind="cpu")(z, np.zeros((1, 3), np.int64), None)


def test_exp_and_tanh_are_accurate():
    """The vectorisable exp (x ≤ 0) and tanh built on it, against NumPy, over their ranges."""
    import numba

    @numba.njit
    def apply(x, out_exp, out_tanh):
        for i in range(x.size):
            out_exp[i] = _common.exp(-abs(x[i]))
            out_tanh[i] = _common.tanh(x[i])

    for dtype, ulps, tanh_atol in ((np.float32, 2, 3e-7), (np.float64, 2, 5e-16)):
        x = np.concatenate([np.linspace(-800, 800, 20001), np.linspace(-3, 3, 20001), [0.0, -0.0]]).astype(dtype)
        out_exp, out_tanh = np.empty_like(x), np.empty_like(x)
        apply(x, out_exp, out_tanh)
        expected = np.exp(-np.abs(x.astype(np.float64))).astype(dtype)
        normal = expected >= np.finfo(dtype).tiny * 4  # below that: subnormal, flushed to 0
        err = np.abs(out_exp - expected)[normal] / np.spacing(expected[normal])
        assert err.max() <= ulps
        assert (out_exp[~normal] <= np.finfo(dtype).tiny * 4).all()
        np.testing.assert_allclose(out_tanh, np.tanh(x), rtol=0, atol=tanh_atol)


# ---- dispatch --------------------------------------------------------------------------------------
def test_every_recurrence_has_a_cpu_kernel_beside_its_reference():
    get_kernel("sru_forward", np)  # loads minirec.kernels.cpu
    registered = kernel_names()
    for name in CPU_KERNELS:
        assert {"reference", "cpu"} <= set(registered[name]), name


@pytest.mark.parametrize("name", CPU_KERNELS)
def test_dispatch_prefers_cpu_for_numpy_and_env_forces_the_reference(name, monkeypatch):
    family = name.rsplit("_", 1)[0]
    module = {"glrn": "lrn", "elrn": "lrn", "olrn": "lrn", "mingru": "minrnn", "minlstm": "minrnn",
              "linear_scan": "scan"}.get(family, family)
    cpu_module = {"gru": "matrix", "mgu": "matrix", "sgu": "matrix", "lstm": "matrix", "atr": "matrix"}.get(
        module, module)
    cpu = getattr(importlib.import_module(f"minirec.kernels.cpu.{cpu_module}"), name)
    reference = get_kernel(name, np, kind="reference")
    if family != "linear_scan":  # scan.py registers closures; the others are module functions
        assert reference is getattr(importlib.import_module(f"minirec.kernels.{module}"), name)
    assert reference is not cpu
    monkeypatch.delenv("MINIREC_KERNELS", raising=False)
    assert get_kernel(name, np) is cpu
    monkeypatch.setenv("MINIREC_KERNELS", "reference")
    assert get_kernel(name, np) is reference
    monkeypatch.setenv("MINIREC_KERNELS", "cpu")
    assert get_kernel(name, np) is cpu
    assert get_kernel(name, np, kind="reference") is reference
