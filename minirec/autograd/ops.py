"""The primitive ops: each a `Function` with a hand-written backward.

Backward rules work on raw arrays of any backend (the ``xp`` of the inputs). Binary ops
broadcast like NumPy; their backward sums the gradient back to each input's shape
(`unbroadcast`). Shapes that cannot broadcast are an error naming both.
"""

from __future__ import annotations

import builtins
import operator

import numpy as np

from minirec import backend
from minirec.autograd.function import Function, Tensor, is_number
from minirec.numerics import stable_sigmoid, stable_softplus  # noqa: F401 - also re-exported

__all__ = [
    "ShapeError",
    "unbroadcast",
    "add", "sub", "mul", "div", "neg", "pow", "matmul",
    "exp", "log", "tanh", "sigmoid", "relu", "softplus",
    "sum", "mean", "max", "reshape", "transpose", "getitem",
    "concat", "stack", "where", "gather", "log_softmax", "cross_entropy", "dropout",
]


class ShapeError(ValueError):
    """Shapes that an op cannot combine; the message names them."""


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def _broadcast_shape(op, a, b):
    try:
        return np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ShapeError(f"{op}: cannot broadcast shapes {tuple(a.shape)} and {tuple(b.shape)}") from None


def _broadcasts_to(a_shape, b_shape):
    """The broadcast shape of two shapes, or None when they do not broadcast."""
    try:
        return np.broadcast_shapes(a_shape, b_shape)
    except ValueError:
        return None


def _lift(value, like: Tensor) -> Tensor:
    """Python numbers become arrays of ``like``'s dtype when it is floating point, so float32
    stays float32; beside an integer or boolean tensor they keep NumPy's promotion (int · 0.5
    is 0.5, not 0)."""
    if isinstance(value, Tensor):
        return value
    xp = backend.get_xp(like.data)
    if is_number(value) and like.dtype.kind == "f":
        return Tensor(xp.asarray(value, dtype=like.dtype))
    return Tensor(xp.asarray(value))


# ---- elementwise binary ---------------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("add", a, b)
        ctx.shapes = (a.shape, b.shape)
        return a + b

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(grad, ctx.shapes[1])


class Sub(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("sub", a, b)
        ctx.shapes = (a.shape, b.shape)
        return a - b

    @staticmethod
    def backward(ctx, grad):
        return unbroadcast(grad, ctx.shapes[0]), unbroadcast(-grad, ctx.shapes[1])


class Mul(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("mul", a, b)
        ctx.save_for_backward(a, b)
        return a * b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        return unbroadcast(grad * b, a.shape), unbroadcast(grad * a, b.shape)


class Div(Function):
    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("div", a, b)
        ctx.save_for_backward(a, b)
        return a / b

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        grad_a = grad / b
        return unbroadcast(grad_a, a.shape), unbroadcast(-grad_a * a / b, b.shape)


class Pow(Function):
    """a ** b; the gradient for b (a tensor exponent) needs a > 0."""

    @staticmethod
    def forward(ctx, a, b):
        _broadcast_shape("pow", a, b)
        out = a**b
        ctx.save_for_backward(a, b, out)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, b, out = ctx.saved_arrays
        xp = backend.get_xp(a)
        grad_a = None
        if ctx.needs_input_grad[0]:  # b·a^(b−1), which is 0 (not 0·∞) where b = 0
            grad_a = unbroadcast(grad * xp.where(b == 0, 0, b * a ** xp.where(b == 0, 1, b - 1)), a.shape)
        grad_b = None
        if ctx.needs_input_grad[1]:
            safe_log = xp.log(xp.where(a > 0, a, 1))
            grad_b = unbroadcast(grad * out * safe_log, b.shape)
        return grad_a, grad_b


class Neg(Function):
    @staticmethod
    def forward(ctx, a):
        return -a

    @staticmethod
    def backward(ctx, grad):
        return (-grad,)


class MatMul(Function):
    """a @ b with NumPy semantics: 1-D operands and batched (broadcast) leading axes."""

    @staticmethod
    def forward(ctx, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ShapeError(f"matmul: operands must be at least 1-D, got {tuple(a.shape)} and {tuple(b.shape)}")
        inner_a = a.shape[-1]
        inner_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
        if inner_a != inner_b:
            raise ShapeError(
                f"matmul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not align "
                f"({inner_a} != {inner_b} in the contracted axis)"
            )
        ctx.save_for_backward(a, b)
        if a.ndim > 2 and b.ndim == 2:  # (T, B, E) @ (E, K), a layer's projection: one GEMM, not T
            return (a.reshape(-1, inner_a) @ b).reshape(*a.shape[:-1], b.shape[-1])
        try:
            return a @ b
        except ValueError:
            raise ShapeError(f"matmul: cannot broadcast batch axes of {tuple(a.shape)} and {tuple(b.shape)}") from None

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_arrays
        xp = backend.get_xp(a)
        if a.ndim > 2 and b.ndim == 2:  # the projection: ∂b as one (E, T·B) @ (T·B, K) product
            flat_grad = grad.reshape(-1, b.shape[-1])
            grad_a = (flat_grad @ b.T).reshape(a.shape) if ctx.needs_input_grad[0] else None
            grad_b = a.reshape(-1, a.shape[-1]).T @ flat_grad if ctx.needs_input_grad[1] else None
            return grad_a, grad_b
        # Promote 1-D operands to matrices so one rule covers every case.
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g = grad
        if b.ndim == 1:  # (first: for 1-D @ 1-D the scalar gradient becomes (1,), then (1, 1))
            g = xp.expand_dims(g, -1)
        if a.ndim == 1:
            g = xp.expand_dims(g, -2)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = unbroadcast(g @ xp.swapaxes(b2, -1, -2), a2.shape).reshape(a.shape)
        if ctx.needs_input_grad[1]:
            grad_b = unbroadcast(xp.swapaxes(a2, -1, -2) @ g, b2.shape).reshape(b.shape)
        return grad_a, grad_b


# ---- elementwise unary ----------------------------------------------------------------------
class Exp(Function):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_xp(a).exp(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_arrays
        return (grad * out,)


class Log(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_xp(a).log(a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_arrays
        return (grad / a,)


class Tanh(Function):
    @staticmethod
    def forward(ctx, a):
        out = backend.get_xp(a).tanh(a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_arrays
        return (grad * (1 - out * out),)


# stable_sigmoid, stable_softplus: raw-array math in minirec.numerics (below the engine and the
# kernels), imported here for the ops below and for code that imports them from this module.


class Sigmoid(Function):
    @staticmethod
    def forward(ctx, a):
        out = stable_sigmoid(backend.get_xp(a), a)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_arrays
        return (grad * out * (1 - out),)


class ReLU(Function):
    @staticmethod
    def forward(ctx, a):
        ctx.save_for_backward(a)
        return backend.get_xp(a).maximum(a, 0)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_arrays
        return (grad * (a > 0),)


class Softplus(Function):
    @staticmethod
    def forward(ctx, a):
        xp = backend.get_xp(a)
        ctx.save_for_backward(a)
        return stable_softplus(xp, a)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_arrays
        return (grad * stable_sigmoid(backend.get_xp(a), a),)


class Cast(Function):
    @staticmethod
    def forward(ctx, a, dtype):
        ctx.dtype = a.dtype
        return a.astype(dtype)

    @staticmethod
    def backward(ctx, grad):
        return (grad.astype(ctx.dtype),)


# ---- reductions -----------------------------------------------------------------------------
def _normalise_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (operator.index(axis),) if not isinstance(axis, (tuple, list)) else tuple(map(operator.index, axis))
    for ax in axes:
        if not -ndim <= ax < builtins.max(ndim, 1):
            raise ShapeError(f"axis {ax} is out of range for a tensor with {ndim} dimensions")
    return tuple(sorted(ax % ndim for ax in axes)) if ndim else ()


def _expand_reduced(grad, shape, axes, keepdims):
    """Re-insert reduced axes so ``grad`` broadcasts against the input shape."""
    xp = backend.get_xp(grad)
    if not keepdims:
        for ax in axes:
            grad = xp.expand_dims(grad, ax)
    return xp.broadcast_to(grad, shape)


class Sum(Function):
    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes(axis, a.ndim)
        ctx.shape, ctx.keepdims = a.shape, keepdims
        return a.sum(axis=ctx.axes, keepdims=keepdims)

    @staticmethod
    def backward(ctx, grad):
        return (_expand_reduced(grad, ctx.shape, ctx.axes, ctx.keepdims).copy(),)


class Max(Function):
    """Max over axes; ties share the gradient equally (so it stays a true subgradient)."""

    @staticmethod
    def forward(ctx, a, axis=None, keepdims=False):
        ctx.axes = _normalise_axes(axis, a.ndim)
        ctx.keepdims = keepdims
        out = a.max(axis=ctx.axes, keepdims=True)
        ctx.save_for_backward(a, out)
        return out if keepdims else out.squeeze(axis=ctx.axes) if ctx.axes else out

    @staticmethod
    def backward(ctx, grad):
        a, out = ctx.saved_arrays
        is_max = a == out
        count = is_max.sum(axis=ctx.axes, keepdims=True).astype(grad.dtype)  # (an int count would upcast)
        g = _expand_reduced(grad, a.shape, ctx.axes, ctx.keepdims)
        return (g * is_max / count,)


# ---- shape ops ------------------------------------------------------------------------------
def _check_axis(op, axes, ndim, shape):
    """Axes must lie in [−ndim, ndim): a wrapped out-of-range axis would silently pick another."""
    for ax in axes:
        if not -ndim <= operator.index(ax) < ndim:
            raise ShapeError(f"{op}: axis {ax} is out of range for {ndim} dimensions ({shape})")


class Reshape(Function):
    @staticmethod
    def forward(ctx, a, shape):
        ctx.shape = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ShapeError(f"reshape: cannot reshape {tuple(a.shape)} into {tuple(shape)}") from None

    @staticmethod
    def backward(ctx, grad):
        return (grad.reshape(ctx.shape),)


class Transpose(Function):
    @staticmethod
    def forward(ctx, a, axes=None):
        if axes is not None:
            _check_axis("transpose", axes, a.ndim, a.shape)
        axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(ax % a.ndim for ax in axes)
        if sorted(axes) != list(range(a.ndim)):
            raise ShapeError(f"transpose: axes {axes} are not a permutation for shape {tuple(a.shape)}")
        ctx.inverse = tuple(np.argsort(axes))
        return a.transpose(axes)

    @staticmethod
    def backward(ctx, grad):
        return (grad.transpose(ctx.inverse),)


class GetItem(Function):
    """a[index]: basic slicing and integer/boolean array indexing; backward scatters-adds."""

    @staticmethod
    def forward(ctx, a, index):
        ctx.shape, ctx.dtype, ctx.index = a.shape, a.dtype, index
        return a[index]

    @staticmethod
    def backward(ctx, grad):
        xp = backend.get_xp(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        backend.scatter_add(xp, out, ctx.index, grad)
        return (out,)


class Concat(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = backend.get_xp(*arrays)
        if not arrays:
            raise ValueError("concat needs at least one tensor")
        ref = arrays[0]
        _check_axis("concat", (axis,), ref.ndim, ref.shape)
        for a in arrays[1:]:
            if a.ndim != ref.ndim or any(
                n != m for i, (n, m) in enumerate(zip(a.shape, ref.shape)) if i != axis % ref.ndim
            ):
                raise ShapeError(
                    f"concat along axis {axis}: shapes {tuple(ref.shape)} and {tuple(a.shape)} differ off that axis"
                )
        ctx.axis = axis % ref.ndim
        ctx.sizes = [a.shape[ctx.axis] for a in arrays]
        return xp.concatenate(arrays, axis=ctx.axis)

    @staticmethod
    def backward(ctx, grad):
        xp = backend.get_xp(grad)
        cuts = np.cumsum(ctx.sizes)[:-1].tolist()
        return tuple(xp.split(grad, cuts, axis=ctx.axis))


class Stack(Function):
    @staticmethod
    def forward(ctx, *arrays, axis=0):
        xp = backend.get_xp(*arrays)
        if not arrays:
            raise ValueError("stack needs at least one tensor")
        shapes = {tuple(a.shape) for a in arrays}
        if len(shapes) > 1:
            raise ShapeError(f"stack: all shapes must match, got {sorted(shapes)}")
        _check_axis("stack", (axis,), arrays[0].ndim + 1, "the stacked result")
        ctx.axis = axis % (arrays[0].ndim + 1)
        return xp.stack(arrays, axis=ctx.axis)

    @staticmethod
    def backward(ctx, grad):
        xp = backend.get_xp(grad)
        return tuple(xp.moveaxis(grad, ctx.axis, 0))


class Where(Function):
    @staticmethod
    def forward(ctx, condition, a, b):
        xp = backend.get_xp(condition, a, b)
        _broadcast_shape("where", a, b)
        ctx.save_for_backward(condition)
        ctx.shapes = (a.shape, b.shape)
        return xp.where(condition, a, b)

    @staticmethod
    def backward(ctx, grad):
        (condition,) = ctx.saved_arrays
        zero = grad.dtype.type(0)
        xp = backend.get_xp(grad)
        return (
            None,
            unbroadcast(xp.where(condition, grad, zero), ctx.shapes[0]),
            unbroadcast(xp.where(condition, zero, grad), ctx.shapes[1]),
        )


class Gather(Function):
    """Rows of a table: table[indices] (an embedding lookup); backward scatter-adds."""

    @staticmethod
    def forward(ctx, table, indices):
        if indices.dtype.kind not in "iu":
            raise TypeError(f"gather: indices must be integers, got dtype {indices.dtype}")
        if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= table.shape[0]):
            raise IndexError(
                f"gather: index out of range [0, {table.shape[0]}): min {int(indices.min())}, "
                f"max {int(indices.max())}"
            )
        ctx.shape = table.shape
        ctx.save_for_backward(indices)
        return table[indices]

    @staticmethod
    def backward(ctx, grad):
        (indices,) = ctx.saved_arrays
        xp = backend.get_xp(grad)
        out = xp.zeros(ctx.shape, dtype=grad.dtype)
        backend.scatter_add(xp, out, indices.reshape(-1), grad.reshape(-1, *ctx.shape[1:]))
        return out, None


# ---- losses ---------------------------------------------------------------------------------
class LogSoftmax(Function):
    @staticmethod
    def forward(ctx, a, axis=-1):
        xp = backend.get_xp(a)
        shifted = a - a.max(axis=axis, keepdims=True)
        out = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        ctx.axis = axis
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_arrays
        xp = backend.get_xp(out)
        return (grad - xp.exp(out) * grad.sum(axis=ctx.axis, keepdims=True),)


class CrossEntropy(Function):
    """Mean negative log-likelihood of integer targets under softmax(logits) over the last axis.

    Positions whose target equals ``ignore_index``, or where ``mask`` is False, count for
    nothing; the mean is over the positions that count. Fused so the backward is one line:
    (softmax − onehot) / n.
    """

    @staticmethod
    def forward(ctx, logits, targets, mask=None, ignore_index=None):
        xp = backend.get_xp(logits, targets, mask)
        if targets.shape != logits.shape[:-1]:
            raise ShapeError(
                f"cross_entropy: targets of shape {tuple(targets.shape)} for logits of shape "
                f"{tuple(logits.shape)} (expected {tuple(logits.shape[:-1])})"
            )
        if mask is not None and mask.shape != targets.shape:
            raise ShapeError(
                f"cross_entropy: mask of shape {tuple(mask.shape)} for targets of shape {tuple(targets.shape)}"
            )
        keep = xp.ones(targets.shape, dtype=bool) if mask is None else mask.astype(bool)
        if ignore_index is not None:
            keep = keep & (targets != ignore_index)
        safe_targets = xp.where(keep, targets, 0)
        low, high, kept = 0, 0, 0
        if safe_targets.size:  # the range check and the count in one host transfer (GPU: one sync, not three)
            bounds = xp.stack([safe_targets.min().astype("int64"), safe_targets.max().astype("int64"),
                               keep.sum().astype("int64")])
            low, high, kept = (int(v) for v in bounds.tolist())
        if low < 0 or high >= logits.shape[-1]:
            raise IndexError(f"cross_entropy: a target is outside [0, {logits.shape[-1]})")
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))
        picked = xp.take_along_axis(log_probs, safe_targets[..., None], axis=-1)[..., 0]
        count = builtins.max(kept, 1)
        ctx.save_for_backward(log_probs, safe_targets, keep)
        ctx.count = count
        return -(picked * keep).sum() / logits.dtype.type(count)

    @staticmethod
    def backward(ctx, grad):
        log_probs, targets, keep = ctx.saved_arrays
        xp = backend.get_xp(log_probs)
        g = xp.exp(log_probs)
        onehot = xp.zeros_like(g)
        xp.put_along_axis(onehot, targets[..., None], 1, axis=-1)
        g = (g - onehot) * keep[..., None] * (grad / ctx.count)
        return g, None, None


class Dropout(Function):
    """Inverted dropout: keep with probability 1 − p and scale by 1/(1 − p)."""

    @staticmethod
    def forward(ctx, a, p, noise_shape=None):
        xp = backend.get_xp(a)
        shape = a.shape if noise_shape is None else tuple(noise_shape)
        if noise_shape is not None and _broadcasts_to(shape, a.shape) != a.shape:
            raise ShapeError(f"dropout: noise_shape {shape} does not broadcast to the input's shape {tuple(a.shape)}")
        keep = backend.rng(xp).random(shape, dtype=np.float32) >= p
        scale = (keep / (1 - p)).astype(a.dtype)
        ctx.save_for_backward(scale)
        return a * scale

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_arrays
        return (unbroadcast(grad * scale, grad.shape),)


# ---- the functional API ---------------------------------------------------------------------
def _binary(fn, a, b):
    if not isinstance(a, Tensor):
        a = _lift(a, b)
    b = _lift(b, a)
    return fn.apply(a, b)


def add(a, b):
    return _binary(Add, a, b)


def sub(a, b):
    return _binary(Sub, a, b)


def mul(a, b):
    return _binary(Mul, a, b)


def div(a, b):
    return _binary(Div, a, b)


def pow(a, b):  # shadows the builtin on purpose: ops.pow, ops.sum, ops.max
    return _binary(Pow, a, b)


def neg(a):
    return Neg.apply(a)


def matmul(a, b):
    return _binary(MatMul, a, b)


def exp(a):
    return Exp.apply(a)


def log(a):
    return Log.apply(a)


def tanh(a):
    return Tanh.apply(a)


def sigmoid(a):
    return Sigmoid.apply(a)


def relu(a):
    return ReLU.apply(a)


def softplus(a):
    return Softplus.apply(a)


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, axis=axis, keepdims=keepdims)


def mean(a, axis=None, keepdims=False):
    axes = _normalise_axes(axis, a.ndim)
    count = int(np.prod([a.shape[ax] for ax in axes])) if axes else 1
    return Sum.apply(a, axis=axis, keepdims=keepdims) * (1.0 / builtins.max(count, 1))


def max(a, axis=None, keepdims=False):
    return Max.apply(a, axis=axis, keepdims=keepdims)


def reshape(a, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return Reshape.apply(a, shape=shape)


def transpose(a, *axes):
    if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
        axes = tuple(axes[0])
    return Transpose.apply(a, axes=axes or None)


def getitem(a, index):
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return GetItem.apply(a, index=index)


def concat(tensors, axis=0):
    return Concat.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    return Stack.apply(*tensors, axis=axis)


def where(condition, a, b):
    cond = condition.data if isinstance(condition, Tensor) else condition
    if isinstance(a, Tensor):
        b = _lift(b, a)
    else:
        a = _lift(a, b)
    return Where.apply(cond, a, b)


def gather(table, indices):
    indices = indices.data if isinstance(indices, Tensor) else indices
    if not hasattr(indices, "dtype"):  # a list of ids
        indices = backend.get_xp(table.data if isinstance(table, Tensor) else table).asarray(indices)
    return Gather.apply(table, indices)


def log_softmax(a, axis=-1):
    return LogSoftmax.apply(a, axis=axis)


def cross_entropy(logits, targets, mask=None, ignore_index=None):
    """Mean cross-entropy over the positions that count (see `CrossEntropy`)."""
    targets = targets.data if isinstance(targets, Tensor) else targets
    mask = mask.data if isinstance(mask, Tensor) else mask
    return CrossEntropy.apply(logits, targets, mask, ignore_index=ignore_index)


def dropout(a, p: float, training: bool = True, noise_shape=None):
    """Zero each element with probability ``p`` (identity when not training or p == 0)."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0:
        return a
    return Dropout.apply(a, p=p, noise_shape=noise_shape)


# ---- operators on Tensor --------------------------------------------------------------------
def _attach_operators():
    T = Tensor
    T.__add__ = lambda a, b: add(a, b)
    T.__radd__ = lambda a, b: add(b, a)
    T.__sub__ = lambda a, b: sub(a, b)
    T.__rsub__ = lambda a, b: sub(b, a)
    T.__mul__ = lambda a, b: mul(a, b)
    T.__rmul__ = lambda a, b: mul(b, a)
    T.__truediv__ = lambda a, b: div(a, b)
    T.__rtruediv__ = lambda a, b: div(b, a)
    T.__pow__ = lambda a, b: pow(a, b)
    T.__rpow__ = lambda a, b: pow(b, a)
    T.__matmul__ = lambda a, b: matmul(a, b)
    T.__rmatmul__ = lambda a, b: matmul(b, a)
    T.__neg__ = lambda a: neg(a)
    T.__getitem__ = lambda a, index: getitem(a, index)
    T.sum = lambda a, axis=None, keepdims=False: sum(a, axis, keepdims)
    T.mean = lambda a, axis=None, keepdims=False: mean(a, axis, keepdims)
    T.max = lambda a, axis=None, keepdims=False: max(a, axis, keepdims)
    T.reshape = lambda a, *shape: reshape(a, *shape)
    T.transpose = lambda a, *axes: transpose(a, *axes)
    T.T = property(lambda a: transpose(a))
    T.exp = lambda a: exp(a)
    T.log = lambda a: log(a)
    T.tanh = lambda a: tanh(a)
    T.sigmoid = lambda a: sigmoid(a)
    T.relu = lambda a: relu(a)
    # Comparisons give plain boolean arrays: they have no gradient.
    T.__gt__ = lambda a, b: a.data > (b.data if isinstance(b, Tensor) else b)
    T.__lt__ = lambda a, b: a.data < (b.data if isinstance(b, Tensor) else b)
    T.__ge__ = lambda a, b: a.data >= (b.data if isinstance(b, Tensor) else b)
    T.__le__ = lambda a, b: a.data <= (b.data if isinstance(b, Tensor) else b)


_attach_operators()
