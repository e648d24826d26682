"""The numba CPU kernels (minirec.kernels.cpu) against the reference loops, and the dispatch.

Every ``cpu`` kernel is held to its ``reference`` on random inputs, forward and backward (the
backward of both fed the reference forward's saved arrays), in float32 (rtol 1e-5) and float64
(1e-12), with and without mask and with a random or zero initial state, for odd sizes: T = 1,
B = 1, H not a multiple of the SIMD width, T = 0, B = 0, and sizes large enough to be split
across threads. numba compiles each kernel on first use (cached on disk afterwards).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import re
import subprocess
import sys

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
                 "lstm", "atr", "gru_reset_after")
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
    width = {"gru": 3 * H, "gru_reset_after": 3 * H, "mgu": 2 * H, "sgu": H + 2, "lstm": 4 * H, "atr": H}[cell]
    x_proj = new(T, B, width)
    U = new(H, width) / x_proj.dtype.type(np.sqrt(H))
    if cell == "lstm":
        c0 = h0[::-1].copy()
        return "lstm", (x_proj, U, h0, c0, mask), {}, lambda out: (
            (U, h0, c0, mask, *out, new(T, B, H), new(B, H), new(B, H)), {})
    if cell == "atr":
        return "atr", (x_proj, U, new(H), h0, mask), {}, lambda out: (
            (x_proj, U, h0, *out, mask, new(T, B, H), new(B, H)), {})
    if cell == "gru_reset_after":
        return cell, (x_proj, U, new(H), h0, mask), {}, lambda out: ((U, h0, mask, *out, new(T, B, H), new(B, H)), {})
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
    **{c: (_matrix, {"cell": c}) for c in ("gru", "gru_reset_after", "mgu", "sgu", "lstm", "atr")},
}


@pytest.mark.parametrize(
    "case, size",
    [(case, size) for case in CASES for size in SIZES + ([] if CASES[case][0] is _matrix else [SPLIT_SIZE])],
    ids=lambda p: "T{}-B{}-H{}".format(*p) if isinstance(p, tuple) else p,
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_cpu_kernel_matches_reference(case, size, dtype, monkeypatch):
    builder, options = CASES[case]
    T, B, H = size
    if size == SPLIT_SIZE:  # make the threaded path cut this row into channel ranges (on any machine)
        monkeypatch.setitem(_common.THREADS, "count", 3)
        monkeypatch.setattr(_common, "MIN_TILE_NS", 1)
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
    # candidates that differ from step to step and from h0, so that h depends on every gate
    x = np.random.default_rng(3).uniform(-2, 2, k_f.shape).astype(dtype)
    h0 = np.full((1, 1), 0.5, dtype)
    outputs = {}
    for kind in ("reference", "cpu"):
        h, f_prime = get_kernel("minlstm_forward", np, kind=kind)(k_f.reshape(-1, 1, 1), k_i.reshape(-1, 1, 1),
                                                                  x.reshape(-1, 1, 1), h0, None, "sequential")
        assert np.isfinite(h).all() and np.isfinite(f_prime).all()
        outputs[kind] = h, f_prime
    assert_close(outputs["cpu"][1], outputs["reference"][1], RTOL[dtype], "minlstm f′")
    assert_close(outputs["cpu"][0], outputs["reference"][0], RTOL[dtype], "minlstm h")
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


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_tanh_is_accurate_relative_to_its_value_down_to_tiny_arguments(dtype):
    """Relative error within a few ulp from |x| = 1e−30 to 20, both signs: (1 − e)/(1 + e) alone
    cancels for small |x| (tanh(1e−8) was 0, float32 tanh(−1e−6) 1.3 % off)."""
    import numba

    @numba.njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = _common.tanh(x[i])

    size = np.logspace(-30, np.log10(20), 20001)
    x = np.concatenate([size, -size, [0.62499, 0.625, 0.62501]]).astype(dtype)
    out = np.empty_like(x)
    apply(x, out)
    exact = np.tanh(x.astype(np.float64))  # (float64's own error: within an ulp)
    ulps = np.abs(out - exact) / np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)
    assert ulps.max() <= 4, (x[np.argmax(ulps)], ulps.max())
    zeros = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype)
    out = np.empty_like(zeros)
    apply(zeros, out)
    np.testing.assert_array_equal(out, [0.0, -0.0, 1.0, -1.0, np.nan])
    assert np.signbit(out[1]) and not np.signbit(out[0])


# ---- argument checks: every wrapper, before numba reads anything ----------------------------------------
def _kernel_args(case, direction, dtype=np.float64):
    """(name, cpu kernel, positional args, keyword args) of a valid call of ``case``'s kernel of
    ``direction`` at T, B, H = 3, 2, 4 (a mask and a non-zero initial state; the backward fed the
    reference forward)."""
    builder, options = CASES[case]
    rng = np.random.default_rng(0)
    new = lambda *shape: rng.standard_normal(shape).astype(dtype)
    mask = np.ones((3, 2), dtype)
    name, args, kwargs, backward_args = builder(rng, 3, 2, 4, new, mask, new(2, 4), **options)
    if direction == "backward":
        args, kwargs = backward_args(get_kernel(f"{name}_forward", np, kind="reference")(*args, **kwargs))
    kernel = get_kernel(f"{name}_{direction}", np, kind="cpu")
    return f"{name}_{direction}", kernel, list(args), kwargs


def _named(message, names):
    """The argument names a check's message blames."""
    return {name for name in names if re.search(rf"(^|[ :;]){re.escape(name)}( \(| None|\.shape)", message)}


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_argument_of_the_wrong_shape_is_refused_and_named(case, direction):
    """Each array argument in turn one shorter along its first, then its last axis: a ValueError
    naming it, before any numba call (numba reads without bounds checks: garbage or a crash). An
    argument the kernel takes a size from (T, B, H) makes the others look wrong: they are named."""
    name, kernel, args, kwargs = _kernel_args(case, direction)
    params = list(inspect.signature(kernel).parameters)
    tried = 0
    for k, arg in enumerate(args):
        if not isinstance(arg, np.ndarray):
            continue
        for axis in sorted({0, arg.ndim - 1}):
            short = list(args)
            short[k] = arg[(slice(None),) * axis + (slice(0, -1),)]
            with pytest.raises(ValueError) as error:
                kernel(*short, **kwargs)
            message, tried = str(error.value), tried + 1
            named = _named(message, params)
            if params[k] in named:
                if message.startswith(f"{name}: "):  # check_args: nothing else blamed
                    assert named == {params[k]}, message
            else:
                assert named, message
    assert tried >= 4


def test_shape_errors_list_every_wrong_argument():
    _, kernel, args, kwargs = _kernel_args("sru", "forward")
    args[2] = args[2][:1]  # v_f (1,)
    args[7] = np.ones((3, 1))  # mask
    with pytest.raises(ValueError) as error:
        kernel(*args, **kwargs)
    assert str(error.value) == "sru_forward: v_f (1,) (expected (4,)); mask (3, 1) (expected (3, 2))"
    _, kernel, args, kwargs = _kernel_args("sru", "forward")
    args[1] = None  # x_skip is required (the mask and drop are not)
    with pytest.raises(ValueError, match=r"^sru_forward: x_skip None \(expected \(3, 2, 4\)\)$"):
        kernel(*args, **kwargs)
    _, kernel, args, kwargs = _kernel_args("mingru-sequential-g=False", "forward")
    args[2] = args[2][0]  # h0 (H,) instead of (B, H)
    with pytest.raises(ValueError, match=r"h0 \(4,\) \(expected \(2, 4\)\)"):
        kernel(*args, **kwargs)


def test_a_state_wider_than_the_projection_is_refused_not_read_past():
    """What crashed Python (SIGSEGV): U built for H = 1, c0 for a much larger H."""
    rng = np.random.default_rng(0)
    U, x_skip, vector = rng.standard_normal((2, 1, 3)), rng.standard_normal((2, 1, 1)), np.zeros(1)
    c0 = np.zeros((1, 100_000))
    with pytest.raises(ValueError, match=r"U \(2, 1, 3\) \(expected \(2, 1, 300000 or 400000\)\)"):
        get_kernel("sru_forward", np, kind="cpu")(U, x_skip, vector, vector, vector, vector, c0, None, None, 1.0)
    with pytest.raises(ValueError, match=r"U \(2, 1, 3\)"):
        get_kernel("qrnn_forward", np, kind="cpu")(U, np.zeros(3), c0, None, None)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("case", [case for case in CASES if case != "linear_scan"])
def test_mixed_float_dtypes_are_refused_and_named(case, direction):
    """Every float argument must have the first one's dtype (float32 U with float64 c0 gave float32
    results where the reference gives float64); the mask may be of any dtype."""
    name, kernel, args, kwargs = _kernel_args(case, direction, np.float32)
    params = list(inspect.signature(kernel).parameters)
    floats = [k for k, arg in enumerate(args) if isinstance(arg, np.ndarray) and params[k] != "mask"]
    for k in floats:
        other = list(args)
        other[k] = args[k].astype(np.float64)
        with pytest.raises(TypeError, match=r"float64.*float32|float32.*float64") as error:
            kernel(*other, **kwargs)
        blamed = params[k] if k != floats[0] else params[floats[1]]  # (the first one sets the dtype)
        assert str(error.value).startswith(f"{name}: {blamed} has dtype"), str(error.value)


def test_the_linear_scan_refuses_mixed_dtypes_like_its_reference():
    """The scan keeps the contract of `minirec.kernels.scan` (its ValueError, tests/test_scan.py)."""
    a = np.ones((3, 2))
    with pytest.raises(ValueError, match="float64.*float32"):
        get_kernel("linear_scan_forward", np, kind="cpu")(a, a.astype(np.float32))


@pytest.mark.parametrize("kernel", ["sru_forward", "elrn_forward"])
def test_masks_of_any_dtype_are_accepted(kernel):
    """The cells pass the mask in the data's dtype; bool, integer and another float work alike."""
    case = {"sru_forward": "sru", "elrn_forward": "elrn-tanh"}[kernel]
    _, run, args, kwargs = _kernel_args(case, "forward", np.float32)
    position = list(inspect.signature(run).parameters).index("mask")
    mask = np.array([[1, 1], [1, 0], [1, 0]])
    expected = None
    for dtype in (np.float32, bool, np.int64, np.float64):
        args[position] = mask.astype(dtype)
        out = run(*args, **kwargs)
        if expected is None:
            expected = out
        for got, want in zip(out, expected):
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, want)


# ---- numba's cache follows _common.py ------------------------------------------------------------------
def test_the_cache_is_dropped_when_the_stamped_source_changes(tmp_path):
    def cached_files():
        return sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".nbi", ".nbc"))

    def fill():
        for name in ("sru._forward_tile-30.py311.nbi", "sru._forward_tile-30.py311.1.nbc"):
            (tmp_path / name).write_bytes(b"old")

    (tmp_path / "module.cpython-311.pyc").write_bytes(b"pyc")
    fill()
    assert _common.drop_stale_cache(str(tmp_path), b"version 1")  # no stamp yet: dropped
    assert cached_files() == []
    assert (tmp_path / "module.cpython-311.pyc").exists()  # only numba's files go
    stamp = (tmp_path / _common.STAMP_NAME).read_text().strip()
    assert stamp == hashlib.sha256(b"version 1").hexdigest()
    fill()
    assert not _common.drop_stale_cache(str(tmp_path), b"version 1")  # same source: kept
    assert len(cached_files()) == 2
    assert _common.drop_stale_cache(str(tmp_path), b"version 2")
    assert cached_files() == []
    assert (tmp_path / _common.STAMP_NAME).read_text().strip() == hashlib.sha256(b"version 2").hexdigest()
    assert not _common.drop_stale_cache(str(tmp_path / "missing"), b"version 3")  # nothing to read: no error


def test_a_cache_directory_it_cannot_write_is_left_alone(tmp_path, monkeypatch):
    """A read-only package directory (numba cannot cache there either): no error at import."""
    (tmp_path / "k.nbi").write_bytes(b"old")

    def refuse(*args, **kwargs):
        raise PermissionError("read-only")

    monkeypatch.setattr(_common.os, "remove", refuse)
    assert not _common.drop_stale_cache(str(tmp_path), b"new")
    assert (tmp_path / "k.nbi").exists() and not (tmp_path / _common.STAMP_NAME).exists()


def test_the_package_stamps_its_cache_with_the_source_of_common():
    directory = _common.numba_cache_directory(_common.sigmoid)
    with open(_common.__file__, "rb") as file:
        digest = hashlib.sha256(file.read()).hexdigest()
    with open(os.path.join(directory, _common.STAMP_NAME)) as file:
        assert file.read().strip() == digest


def test_a_kernel_cached_before_its_helper_changed_uses_the_new_helper(tmp_path):
    """numba's cache checks only the cached function's own file: the mechanism of _common, in two
    small modules, across processes (a cached kernel calling a helper from another file)."""
    helpers = tmp_path / "helpers.py"
    source = """import numba
from minirec.kernels.cpu import _common

@numba.njit(cache=True)
def helper(x):
    return x + {}

_common.drop_stale_cache(_common.numba_cache_directory(helper), open(__file__, "rb").read())
"""
    (tmp_path / "kernel.py").write_text("""import numba
import helpers

@numba.njit(cache=True)
def kernel(x):
    return helpers.helper(x) * 10

print(kernel(1))
""")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    env.pop("NUMBA_CACHE_DIR", None)
    run = lambda: subprocess.run([sys.executable, str(tmp_path / "kernel.py")], env=env, capture_output=True,
                                 text=True, check=True).stdout.strip()
    helpers.write_text(source.format(1))
    assert run() == "20"
    assert any(p.suffix == ".nbi" for p in (tmp_path / "__pycache__").iterdir())  # kernel is cached now
    helpers.write_text(source.format(2))
    assert run() == "30"


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
              "linear_scan": "scan", "gru_reset_after": "gru"}.get(family, family)
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
