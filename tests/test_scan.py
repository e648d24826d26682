"""Tests for minirec.kernels.scan (linear recurrence solvers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minirec.kernels import scan as S

TS = [0, 1, 2, 3, 5, 8, 13, 64]
B, D = 3, 5  # odd on purpose
RTOL = {np.float32: 1e-5, np.float64: 1e-12}


def make(T, shape=(B, D), dtype=np.float64, seed=0, positive=False):
    rng = np.random.default_rng(seed)
    if positive:
        a = rng.uniform(0.5, 1.0, (T, *shape))
        b = rng.uniform(0.1, 2.0, (T, *shape))
        h0 = rng.uniform(0.1, 2.0, shape)
    else:
        a = rng.uniform(-1.0, 1.0, (T, *shape))
        b = rng.normal(size=(T, *shape))
        h0 = rng.normal(size=shape)
    return a.astype(dtype), b.astype(dtype), np.asarray(h0, dtype=dtype)


def assert_close(x, ref, rtol):
    """Relative agreement, with an absolute floor at rtol * max|ref|."""
    assert x.shape == ref.shape
    assert x.dtype == ref.dtype
    if ref.size:
        scale = max(1.0, float(np.max(np.abs(ref))))
        np.testing.assert_allclose(x, ref, rtol=rtol, atol=rtol * scale)


def seq_loop(a, b, h0):
    """Independent scalar reference for the first element of every column."""
    h = h0.copy()
    out = []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        out.append(h.copy())
    return np.array(out).reshape(a.shape)


FORWARD = {
    "blelloch": S.linear_scan_blelloch,
    "dispatch-blelloch": lambda a, b, h0=None: S.linear_scan(a, b, h0, method="blelloch"),
    "dispatch-sequential": lambda a, b, h0=None: S.linear_scan(a, b, h0, method="sequential"),
    "numba-cpu": S.linear_scan_cpu,
}


# ---------------------------------------------------------------------------
# forward agreement
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("T", TS)
def test_sequential_matches_plain_loop(T):
    a, b, h0 = make(T)
    np.testing.assert_allclose(S.linear_scan_sequential(a, b, h0), seq_loop(a, b, h0),
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(S.linear_scan_sequential(a, b),
                               seq_loop(a, b, np.zeros_like(h0)), rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", TS)
@pytest.mark.parametrize("name", list(FORWARD))
def test_forward_methods_match_sequential(name, T, with_h0, dtype):
    a, b, h0 = make(T, dtype=dtype, seed=T)
    h0 = h0 if with_h0 else None
    ref = S.linear_scan_sequential(a, b, h0)
    assert ref.shape == (T, B, D) and ref.dtype == dtype
    out = FORWARD[name](a, b, h0)
    assert_close(out, ref, RTOL[dtype])


@pytest.mark.parametrize("shape", [(), (7,), (3, 5), (2, 3, 5)])
@pytest.mark.parametrize("name", ["blelloch", "numba-cpu"])
def test_any_trailing_shape(shape, name):
    a, b, h0 = make(11, shape=shape, seed=1)
    ref = S.linear_scan_sequential(a, b, h0)
    assert ref.shape == (11, *shape)
    assert_close(FORWARD[name](a, b, h0), ref, 1e-12)


@pytest.mark.parametrize("shape", [(0, 0, D), (4, 0, D), (0, B, D)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_empty_time_or_batch(shape, with_h0):
    a = np.ones(shape)
    h0 = np.ones(shape[1:]) if with_h0 else None
    for f in (S.linear_scan_sequential, S.linear_scan_blelloch, S.linear_scan_cpu,
              S.linear_scan):
        out = f(a, a, h0)
        assert out.shape == shape and out.dtype == a.dtype
    out = S.linear_scan_log(a, a, h0)
    assert out.shape == shape
    for grads in (S.linear_scan_backward(a, a, h0, a, method="blelloch"),
                  S.linear_scan_backward(a, a, h0, a),
                  S.linear_scan_backward_cpu(a, a, h0, a)):
        ga, gb, gh0 = grads
        assert ga.shape == gb.shape == shape and gh0.shape == shape[1:]
        if shape[0] == 0:
            assert np.all(gh0 == 0)


@settings(max_examples=40, deadline=None)
@given(T=st.integers(0, 40), b=st.integers(0, 4), d=st.integers(1, 4),
       with_h0=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_property_blelloch_and_numba_match_sequential(T, b, d, with_h0, seed):
    a, bb, h0 = make(T, shape=(b, d), seed=seed)
    h0 = h0 if with_h0 else None
    ref = S.linear_scan_sequential(a, bb, h0)
    assert_close(S.linear_scan_blelloch(a, bb, h0), ref, 1e-12)
    assert_close(S.linear_scan_cpu(a, bb, h0), ref, 1e-12)


def test_numba_accepts_non_contiguous_inputs():
    a, b, h0 = make(9, shape=(D, B), seed=3)
    a_t, b_t, h0_t = a.transpose(0, 2, 1), b.transpose(0, 2, 1), h0.T
    assert not a_t.flags.c_contiguous
    ref = S.linear_scan_sequential(a_t, b_t, h0_t)
    assert_close(S.linear_scan_cpu(a_t, b_t, h0_t), ref, 1e-12)
    assert_close(S.linear_scan_cpu(a[::2], b[::2], h0), S.linear_scan_sequential(a[::2], b[::2], h0),
                 1e-12)


def test_inputs_not_modified():
    a, b, h0 = make(13, seed=4)
    copies = [x.copy() for x in (a, b, h0)]
    S.linear_scan_blelloch(a, b, h0)
    S.linear_scan_cpu(a, b, h0)
    S.linear_scan_log(np.log(np.abs(a)), np.log(np.abs(b)), np.log(np.abs(h0)))
    for x, c in zip((a, b, h0), copies):
        np.testing.assert_array_equal(x, c)


def test_get_array_module_is_numpy_for_numpy():
    assert S.get_array_module(np.zeros(3), None) is np


# ---------------------------------------------------------------------------
# log space
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", TS)
def test_log_scan_matches_sequential(T, with_h0):
    a, b, h0 = make(T, seed=10 + T, positive=True)
    a = a * 0.99  # a in (0, 1)
    h0_ = h0 if with_h0 else None
    ref = S.linear_scan_sequential(a, b, h0_)
    log_h = S.linear_scan_log(np.log(a), np.log(b), None if h0_ is None else np.log(h0_))
    assert log_h.shape == ref.shape and log_h.dtype == ref.dtype
    if T:
        np.testing.assert_allclose(np.exp(log_h), ref, rtol=1e-10)
        np.testing.assert_allclose(log_h, np.log(ref), rtol=0, atol=1e-10)


@pytest.mark.parametrize("with_h0", [False, True])
def test_log_scan_float32(with_h0):
    a, b, h0 = make(64, dtype=np.float32, seed=2, positive=True)
    h0_ = h0 if with_h0 else None
    ref = S.linear_scan_sequential(a.astype(np.float64), b.astype(np.float64),
                                   None if h0_ is None else h0_.astype(np.float64))
    log_h = S.linear_scan_log(np.log(a), np.log(b), None if h0_ is None else np.log(h0_))
    assert log_h.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_h.astype(np.float64)), ref, rtol=5e-5)


def test_log_scan_handles_zero_b_and_tiny_values():
    # b_t = 0 (log b = -inf) at some steps, and states far below float underflow.
    T = 30
    log_a = np.full((T, 2), -50.0)
    log_b = np.full((T, 2), -800.0)
    log_b[::3] = -np.inf
    log_h0 = np.array([-700.0, -np.inf])
    log_h = S.linear_scan_log(log_a, log_b, log_h0)
    # reference in a shifted scale: everything times exp(800)
    ref = np.empty_like(log_a)
    prev = log_h0
    for t in range(T):
        prev = np.logaddexp(log_a[t] + prev, log_b[t])
        ref[t] = prev
    assert np.all(np.isfinite(log_h[1:])) and np.isneginf(log_h[0, 1])  # h_1 = 0*1 + 0
    np.testing.assert_allclose(log_h, ref, rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 40), scale=st.sampled_from([1.0, 50.0, 2000.0]),
       seed=st.integers(0, 2**32 - 1))
def test_generic_logcumsumexp_matches_numpy(T, scale, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, 3)) * scale
    x[rng.random(x.shape) < 0.2] = -np.inf
    ref = np.logaddexp.accumulate(x, axis=0)
    out = S._logcumsumexp_generic(x)
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(ref))
    fin = np.isfinite(ref)
    np.testing.assert_allclose(out[fin], ref[fin], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(S.logcumsumexp(x)[fin], ref[fin], rtol=0, atol=0)


def test_generic_logcumsumexp_small_terms_not_lost():
    # a global max-subtraction would underflow the early terms to -inf
    x = np.array([-1000.0, -999.0, 0.0, 1000.0])
    out = S._logcumsumexp_generic(x)
    np.testing.assert_allclose(out, np.logaddexp.accumulate(x), rtol=1e-14)
    assert np.all(np.isfinite(out))


# ---------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------


def loss(a, b, h0, w):
    return float(np.sum(w * S.linear_scan_sequential(a, b, h0)))


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        fp = f()
        x[idx] = old - eps
        fm = f()
        x[idx] = old
        g[idx] = (fp - fm) / (2 * eps)
    return g


BACKWARD = {
    "sequential": lambda a, h, h0, g: S.linear_scan_backward(a, h, h0, g, method="sequential"),
    "blelloch": lambda a, h, h0, g: S.linear_scan_backward(a, h, h0, g, method="blelloch"),
    "numba-cpu": S.linear_scan_backward_cpu,
}


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("name", list(BACKWARD))
def test_backward_matches_finite_differences(name, with_h0):
    T, shape = 5, (2, 3)
    a, b, h0 = make(T, shape=shape, seed=21)
    a = a * 1.5  # some |a| > 1 too
    w = np.random.default_rng(22).normal(size=(T, *shape))
    h0_arg = h0 if with_h0 else None
    h0_num = h0 if with_h0 else np.zeros(shape)
    h = S.linear_scan_sequential(a, b, h0_arg)
    grad_a, grad_b, grad_h0 = BACKWARD[name](a, h, h0_arg, w)  # dL/dh = w
    num_a = numeric_grad(lambda: loss(a, b, h0_num, w), a)
    num_b = numeric_grad(lambda: loss(a, b, h0_num, w), b)
    num_h0 = numeric_grad(lambda: loss(a, b, h0_num, w), h0_num)
    for got, want in ((grad_a, num_a), (grad_b, num_b), (grad_h0, num_h0)):
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("T", TS)
def test_backward_methods_agree_with_numba(T, with_h0, dtype):
    a, b, h0 = make(T, dtype=dtype, seed=30 + T)
    h0 = h0 if with_h0 else None
    h = S.linear_scan_sequential(a, b, h0)
    grad_h = np.random.default_rng(T).normal(size=a.shape).astype(dtype)
    ref = S.linear_scan_backward_cpu(a, h, h0, grad_h)
    for method in S.METHODS:
        got = S.linear_scan_backward(a, h, h0, grad_h, method=method)
        for x, r in zip(got, ref):
            assert_close(np.asarray(x), r, RTOL[dtype])


def test_dispatch_runs_the_method_it_names():
    # Agreement tests alone would pass if every method ran the loop: the methods' arithmetic
    # differs, so their results are not bit-identical, and each is the named solver's own.
    a, b, h0 = make(64, seed=40)
    sequential = S.linear_scan(a, b, h0, method="sequential")
    blelloch = S.linear_scan(a, b, h0, method="blelloch")
    assert np.array_equal(blelloch, S.linear_scan_blelloch(a, b, h0))
    assert np.array_equal(sequential, S.linear_scan_sequential(a, b, h0))
    assert not np.array_equal(blelloch, sequential)
    grad_h = np.random.default_rng(41).normal(size=a.shape)
    backward = {m: S.linear_scan_backward(a, sequential, h0, grad_h, method=m) for m in ("sequential", "blelloch")}
    assert not np.array_equal(backward["blelloch"][0], backward["sequential"][0])


def test_backward_formula_explicit():
    # g_t = grad_h_t + a_{t+1} g_{t+1}, grad_a_t = g_t h_{t-1}, grad_h0 = a_1 g_1
    a = np.array([0.5, 2.0, -1.0])
    h0 = np.array(3.0)
    b = np.array([1.0, 1.0, 1.0])
    h = S.linear_scan_sequential(a, b, h0)  # 2.5, 6.0, -5.0
    gh = np.array([1.0, 1.0, 1.0])
    g = np.array([1 + 2.0 * (1 + -1.0 * 1), 1 + -1.0 * 1, 1.0])  # [1, 0, 1]
    grad_a, grad_b, grad_h0 = S.linear_scan_backward(a, h, h0, gh)
    np.testing.assert_allclose(grad_b, g)
    np.testing.assert_allclose(grad_a, g * np.array([3.0, 2.5, 6.0]))
    np.testing.assert_allclose(grad_h0, 0.5 * g[0])


# ---------------------------------------------------------------------------
# Blelloch trace
# ---------------------------------------------------------------------------


def test_blelloch_trace_levels_and_results():
    rng = np.random.default_rng(5)
    va = rng.uniform(-1, 1, 8)
    vb = rng.normal(size=8)
    trace = S.blelloch_trace(va, vb)
    phases = [p for p, *_ in trace]
    assert phases == ["input"] + ["up-sweep"] * 3 + ["clear"] + ["down-sweep"] * 3 + ["inclusive"]
    assert [lvl for p, lvl, *_ in trace if p == "up-sweep"] == [0, 1, 2]
    assert [lvl for p, lvl, *_ in trace if p == "down-sweep"] == [2, 1, 0]

    h = S.linear_scan_sequential(va, vb)  # h0 = 0: B part of the inclusive scan
    A_inc = np.cumprod(va)
    # input: the leaves
    np.testing.assert_array_equal(trace[0][2], va)
    np.testing.assert_array_equal(trace[0][3], vb)
    # end of up-sweep: the root holds the total reduction
    _, _, A_up, B_up = trace[3]
    np.testing.assert_allclose([A_up[-1], B_up[-1]], [A_inc[-1], h[-1]], rtol=1e-12)
    # clear: root replaced by the identity (1, 0)
    assert (trace[4][2][-1], trace[4][3][-1]) == (1.0, 0.0)
    # end of down-sweep: exclusive scan, identity first
    _, _, A_ex, B_ex = trace[7]
    np.testing.assert_allclose(A_ex, np.concatenate([[1.0], A_inc[:-1]]), rtol=1e-12)
    np.testing.assert_allclose(B_ex, np.concatenate([[0.0], h[:-1]]), rtol=1e-12, atol=1e-15)
    # inclusive scan
    _, _, A_in, B_in = trace[8]
    np.testing.assert_allclose(A_in, A_inc, rtol=1e-12)
    np.testing.assert_allclose(B_in, h, rtol=1e-12)
    # entries are snapshots, not views of one buffer
    assert not np.shares_memory(trace[1][3], trace[2][3])


def test_blelloch_trace_pads_other_lengths():
    va, vb = np.full(5, 0.5), np.ones(5)
    trace = S.blelloch_trace(va, vb)
    assert sum(p == "up-sweep" for p, *_ in trace) == 3
    assert trace[0][2].shape == (8,)
    np.testing.assert_array_equal(trace[0][2][5:], 1.0)  # identity padding
    np.testing.assert_array_equal(trace[0][3][5:], 0.0)
    np.testing.assert_allclose(trace[-1][3], S.linear_scan_sequential(va, vb))
    with pytest.raises(ValueError):
        S.blelloch_trace(np.ones((2, 2)), np.ones((2, 2)))


# ---------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------

FORWARD_ALL = [S.linear_scan_sequential, S.linear_scan_blelloch, S.linear_scan,
               S.linear_scan_cpu, S.linear_scan_log]


@pytest.mark.parametrize("f", FORWARD_ALL)
def test_validation_forward(f):
    a = np.ones((4, 3, 5))
    with pytest.raises(ValueError, match=r"\(4, 3, 5\).*\(4, 3, 6\)"):
        f(a, np.ones((4, 3, 6)))
    with pytest.raises(ValueError, match="float64.*float32"):
        f(a, np.ones((4, 3, 5), np.float32))
    with pytest.raises(ValueError, match=r"\(3, 5\).*\(5, 3\)"):
        f(a, a, np.ones((5, 3)))
    with pytest.raises(ValueError, match="dtype"):
        f(a, a, np.ones((3, 5), np.float32))
    with pytest.raises(ValueError, match="time axis"):
        f(np.float64(1.0), np.float64(1.0))


@pytest.mark.parametrize("f", [S.linear_scan_backward, S.linear_scan_backward_cpu])
def test_validation_backward(f):
    a = np.ones((4, 3, 5))
    with pytest.raises(ValueError, match=r"\(4, 3, 5\).*\(4, 3\)"):
        f(a, np.ones((4, 3)), None, a)
    with pytest.raises(ValueError, match="grad_h"):
        f(a, a, None, np.ones((4, 3, 5), np.float32))
    with pytest.raises(ValueError, match="h0"):
        f(a, a, np.ones((3,)), a)


def test_validation_method_and_dtype():
    a = np.ones((4, 3))
    with pytest.raises(ValueError, match="method"):
        S.linear_scan(a, a, method="magic")
    with pytest.raises(ValueError, match="method"):
        S.linear_scan_backward(a, a, None, a, method="magic")
    with pytest.raises(TypeError, match="int64"):
        S.linear_scan_cpu(np.ones((4, 3), np.int64), np.ones((4, 3), np.int64))
