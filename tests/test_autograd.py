"""The engine: every primitive op against finite differences, plus the graph mechanics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import minirec as mr
from minirec.autograd import ops
from minirec.checks import check_op, op_cases

FAST = settings(max_examples=15, deadline=None)


def t64(xp, data, grad=True):
    return mr.tensor(xp.asarray(np.asarray(data, dtype=np.float64)), requires_grad=grad)


@pytest.mark.parametrize("case", op_cases(), ids=[c[0] for c in op_cases()])
def test_every_op_passes_gradcheck(case):
    name, fn, shapes, positive = case
    result = check_op(name, fn, shapes, positive)
    assert result.passed and result.max_rel_error < 1e-6, str(result)


@pytest.mark.parametrize(
    "fn",
    [lambda a, b: a + b, lambda a, b: a - b, lambda a, b: a * b, lambda a, b: a / b, lambda a, b: a**b],
    ids=["add", "sub", "mul", "div", "pow"],
)
@FAST
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=3),
       seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_gradients(fn, shapes, seed):
    rng = np.random.default_rng(seed)
    a, b = (t64(np, rng.uniform(0.5, 2.0, s)) for s in shapes.input_shapes)
    out = fn(a, b)
    assert out.shape == shapes.result_shape
    result = mr.gradcheck(fn, [a, b])
    assert result.max_rel_error < 1e-6


@FAST
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), data=st.data())
def test_reductions_over_drawn_axes(shape, data):
    axis = data.draw(st.none() | st.integers(-len(shape), len(shape) - 1))
    keepdims = data.draw(st.booleans())
    x = t64(np, np.random.default_rng(1).standard_normal(shape))
    for reduce in (ops.sum, ops.mean, ops.max):
        mr.gradcheck(lambda a, reduce=reduce: reduce(a, axis=axis, keepdims=keepdims), [x])
        np.testing.assert_allclose(
            reduce(x, axis=axis, keepdims=keepdims).data,
            {ops.sum: np.sum, ops.mean: np.mean, ops.max: np.max}[reduce](x.data, axis=axis, keepdims=keepdims),
        )


@FAST
@given(batch=st.lists(st.integers(1, 3), max_size=2), n=st.integers(1, 4), k=st.integers(1, 4), m=st.integers(1, 4))
def test_matmul_batched_shapes(batch, n, k, m):
    rng = np.random.default_rng(2)
    a, b = t64(np, rng.standard_normal((*batch, n, k))), t64(np, rng.standard_normal((k, m)))
    np.testing.assert_allclose((a @ b).data, a.data @ b.data)
    assert mr.gradcheck(lambda a, b: a @ b, [a, b]).passed


def test_ops_on_backend(xp):
    """The same ops, values and gradients on whichever backend ``xp`` is."""
    x = t64(xp, [[0.5, -1.0, 2.0], [3.0, -4.0, 0.1]])
    w = t64(xp, [[1.0], [2.0], [-1.0]])
    out = (mr.sigmoid(x @ w) * mr.tanh(x).sum(axis=1, keepdims=True)).mean()
    out.backward()
    assert type(x.grad) is type(x.data)
    assert mr.gradcheck(lambda x, w: mr.softplus(x @ w) + mr.exp(-x), [x, w]).passed


def test_sigmoid_and_softplus_are_stable_for_large_inputs():
    x = mr.tensor(np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0]), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        s = mr.sigmoid(x)
        sp = mr.softplus(x)
        (s.sum() + sp.sum()).backward()
    np.testing.assert_allclose(s.data, [0.0, 1.9287498479639178e-22, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(sp.data, [0.0, 1.9287498479639178e-22, np.log(2), 50.0, 1000.0])
    assert np.all(np.isfinite(x.grad))


def test_cross_entropy_matches_manual_and_ignores_positions():
    rng = np.random.default_rng(3)
    logits = t64(np, rng.standard_normal((4, 5)))
    targets = np.array([1, 0, 4, 2])
    loss = mr.cross_entropy(logits, targets, ignore_index=2)
    log_p = logits.data - np.log(np.exp(logits.data).sum(-1, keepdims=True))
    expected = -np.mean([log_p[0, 1], log_p[1, 0], log_p[2, 4]])
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    loss.backward()
    assert np.all(logits.grad[3] == 0)  # the ignored row gets no gradient


def test_gather_accumulates_repeated_rows():
    table = t64(np, np.zeros((3, 2)))
    out = mr.gather(table, np.array([0, 2, 0, 0]))
    out.sum().backward()
    np.testing.assert_array_equal(table.grad, [[3, 3], [0, 0], [1, 1]])


def test_gradients_accumulate_over_shared_subgraphs():
    x = t64(np, [2.0])
    y = x * x
    z = y + y * 3  # y is used twice: its gradient must be the sum
    z.backward(np.ones(1))
    np.testing.assert_allclose(x.grad, [16.0])  # d(4x²)/dx


def test_dropout_scales_and_is_identity_in_eval():
    x = mr.tensor(np.ones((1000, 10)), requires_grad=True)
    y = mr.dropout(x, 0.3)
    kept = y.data != 0
    assert 0.6 < kept.mean() < 0.8
    np.testing.assert_allclose(y.data[kept], 1 / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, y.data)
    assert mr.dropout(x, 0.3, training=False) is x
    with pytest.raises(ValueError, match="dropout probability"):
        mr.dropout(x, 1.0)


def test_no_grad_records_nothing_and_detach_cuts():
    x = mr.tensor(np.ones(3), requires_grad=True)
    with mr.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    assert not (x * 2).detach().requires_grad


def test_float32_stays_float32_with_python_scalars():
    x = mr.tensor([1.0, 2.0], requires_grad=True)
    assert x.dtype == np.float32
    y = (x * 2.5 + 1) / 3 - 0.5
    assert y.dtype == np.float32
    assert mr.tensor([1, 2]).dtype.kind == "i"


def test_numpy_array_on_the_left_gives_a_tensor():
    x = mr.tensor(np.ones(2), requires_grad=True)
    y = np.array([1.0, 2.0]) * x
    assert isinstance(y, mr.Tensor) and y.requires_grad


# ---- bad input ---------------------------------------------------------------------------------
def test_broadcast_error_names_both_shapes():
    with pytest.raises(mr.ShapeError, match=r"\(2, 3\) and \(4,\)"):
        mr.tensor(np.ones((2, 3))) + mr.tensor(np.ones(4))


def test_matmul_error_names_both_shapes():
    with pytest.raises(mr.ShapeError, match=r"\(2, 3\) and \(4, 5\)"):
        mr.tensor(np.ones((2, 3))) @ mr.tensor(np.ones((4, 5)))


def test_backward_twice_through_freed_graph_says_so():
    x = mr.tensor(np.ones(3), requires_grad=True)
    y = (mr.tanh(x) * 2).sum()
    y.backward()
    with pytest.raises(mr.GraphFreedError, match="retain_graph"):
        y.backward()


def test_backward_twice_with_retain_graph_accumulates():
    x = mr.tensor(np.ones(3), requires_grad=True)
    y = (x * 3).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad, [6.0, 6.0, 6.0])


def test_backward_needs_grad_for_non_scalar():
    x = mr.tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()


def test_mixing_backends_names_both():
    class FakeCupyArray:  # stands in for a CuPy array on a machine without one
        shape = (2,)

    from minirec import backend

    real = backend._backend_name
    backend._backend_name = lambda a: "cupy" if isinstance(a, FakeCupyArray) else real(a)
    try:
        with pytest.raises(mr.BackendError, match="numpy array of shape \\(3,\\) and a cupy array of shape \\(2,\\)"):
            backend.get_xp(np.ones(3), FakeCupyArray())
    finally:
        backend._backend_name = real


def test_gather_rejects_out_of_range_and_float_indices():
    table = mr.tensor(np.ones((3, 2)))
    with pytest.raises(IndexError, match="out of range"):
        mr.gather(table, np.array([0, 3]))
    with pytest.raises(TypeError, match="integers"):
        mr.gather(table, np.array([0.0]))


# ---- edge cases found in review ------------------------------------------------------------------
def test_numbers_beside_integer_tensors_follow_numpy_promotion():
    t = mr.tensor(np.array([1, 2, 3]))
    np.testing.assert_array_equal((t * 0.5).data, [0.5, 1.0, 1.5])  # not cast to int: [0, 0, 0]
    np.testing.assert_array_equal((t + 0.5).data, [1.5, 2.5, 3.5])
    assert t.mean().item() == 2.0
    np.testing.assert_array_equal(mr.tensor(np.array([[1, 2], [3, 5]])).mean(axis=1).data, [1.5, 4.0])
    f32 = mr.tensor(np.ones(2, dtype=np.float32))
    assert (f32 * 0.5).dtype == np.float32  # floats keep their own dtype


def test_power_with_a_zero_exponent_has_a_zero_gradient_at_zero():
    x = t64(np, [0.0, 1.0, 2.0])
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])  # not NaN (0 · 0^−1)
    x = t64(np, [0.0, 0.0, 0.0])
    (x ** mr.tensor(np.array([0.0, 1.0, 2.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 0.0])


def test_gradients_take_their_tensors_dtype():
    x = mr.tensor(np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), requires_grad=True)
    x.max(axis=0).sum().backward()  # an integer tie count used to promote to float64
    assert x.grad.dtype == np.float32
    w = mr.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    (w * np.ones(3)).sum().backward()  # float32 · float64 constant: float64 forward
    assert w.grad.dtype == np.float32
    a = mr.tensor(np.ones(2, dtype=np.float32), requires_grad=True)
    ops.concat([a, mr.tensor(np.ones(2))], axis=0).sum().backward()
    assert a.grad.dtype == np.float32


def test_projection_of_a_strided_sequence_passes_gradcheck():
    # (T, B, E) @ (E, K) runs as one flat product; a transposed (not contiguous) input must too,
    # and a constant weight must get no gradient
    rng = np.random.default_rng(3)
    x, w = t64(np, rng.standard_normal((3, 4, 5))), t64(np, rng.standard_normal((5, 2)))
    assert mr.gradcheck(lambda x, w: ops.transpose(x, 1, 0, 2) @ w, [x, w]).passed
    np.testing.assert_allclose((ops.transpose(x, 1, 0, 2) @ w).data, x.data.transpose(1, 0, 2) @ w.data)
    constant = mr.tensor(w.data)
    (x @ constant).sum().backward()
    assert constant.grad is None and x.grad.shape == x.shape


@pytest.mark.parametrize("shapes", [((4,), (4,)), ((4,), (2, 4, 3)), ((3, 4), (4,)), ((2, 3, 4), (4,))])
def test_matmul_with_vectors_passes_gradcheck(shapes):
    rng = np.random.default_rng(1)
    a, b = (t64(np, rng.standard_normal(s)) for s in shapes)
    assert mr.gradcheck(lambda a, b: a @ b, [a, b]).passed


@pytest.mark.parametrize("call", [
    lambda x: ops.concat([x, x], axis=2),
    lambda x: ops.concat([x, x], axis=-3),
    lambda x: ops.stack([x, x], axis=3),
    lambda x: ops.transpose(x, 0, 3),
])
def test_out_of_range_axes_are_refused_not_wrapped(call):
    with pytest.raises(ops.ShapeError, match="out of range"):
        call(t64(np, np.ones((2, 3))))


def test_bad_op_arguments_are_named():
    x = t64(np, np.ones((2, 3)))
    assert x.sum(axis=np.int64(1)).shape == (2,)  # a NumPy integer is an axis
    for call in (lambda: ops.concat([]), lambda: ops.stack([])):
        with pytest.raises(ValueError, match="at least one tensor"):
            call()
    with pytest.raises(ops.ShapeError, match="out of range"):
        ops.concat([t64(np, 1.0), t64(np, 2.0)])
    table = t64(np, np.arange(6.0).reshape(3, 2))
    np.testing.assert_array_equal(ops.gather(table, [2, 0]).data, [[4.0, 5.0], [0.0, 1.0]])  # a list of ids
    with pytest.raises(ops.ShapeError, match="noise_shape"):
        ops.dropout(t64(np, np.ones(3)), 0.5, training=True, noise_shape=(2, 3))  # would fail in backward


def test_backward_keeps_its_own_copy_of_the_given_gradient():
    x = t64(np, np.ones(3))
    g = np.ones(3)
    x.backward(g)
    g[:] = 100.0
    np.testing.assert_array_equal(x.grad, np.ones(3))
