"""`Tensor` and `Function`: the whole autograd mechanism in one file.

A `Function` says how to compute something on raw arrays (`forward`) and how to send a
gradient back to its inputs (`backward`). `Function.apply` runs `forward` on the arrays
inside its Tensor arguments and, when any of them requires a gradient, records a `Context`
linking the outputs to the inputs. `Tensor.backward` walks those contexts in reverse
topological order and calls each `backward` once, with the summed gradient of its outputs.

Chapter 1 derives this; every primitive op (ops.py) and every fused recurrence (cells/) is
a Function, so one mechanism explains everything.
"""

from __future__ import annotations

import contextlib
import numbers

import numpy as np

from minirec import backend

__all__ = ["Tensor", "Function", "Context", "no_grad", "is_grad_enabled", "tensor", "GraphFreedError"]

_GRAD_ENABLED = True


class GraphFreedError(RuntimeError):
    """backward() reached a graph whose saved arrays were already freed by an earlier backward()."""


def is_grad_enabled() -> bool:
    return _GRAD_ENABLED


@contextlib.contextmanager
def no_grad():
    """Within this block, `Function.apply` records nothing (evaluation, optimiser steps)."""
    global _GRAD_ENABLED
    previous, _GRAD_ENABLED = _GRAD_ENABLED, False
    try:
        yield
    finally:
        _GRAD_ENABLED = previous


class Context:
    """What a Function call remembers for its backward: inputs, saved arrays, output shapes."""

    def __init__(self, function, inputs):
        self.function = function
        self.inputs = inputs  # the Tensor arguments, in order (None for non-Tensor arguments)
        self.needs_input_grad = tuple(t is not None and t.requires_grad for t in inputs)
        self.saved = ()
        self.output_meta = ()  # (shape, dtype) of each output, to build zero gradients
        self.freed = False
        # set by Tensor.backward before this node's backward runs: False means the saved arrays are
        # dropped right after, so a backward may overwrite them in place instead of allocating
        self.retains_graph = True

    def save_for_backward(self, *arrays):
        self.saved = arrays

    @property
    def saved_arrays(self):
        if self.freed:
            raise GraphFreedError(
                f"backward through {self.function.__name__} a second time: its saved arrays were "
                "freed by the first backward(); call backward(retain_graph=True) the first time"
            )
        return self.saved


class Function:
    """Subclass with two static methods working on raw arrays (never Tensors):

    ``forward(ctx, *arrays, **options)`` returns an array or a tuple of arrays;
    ``backward(ctx, *grad_outputs)`` returns one gradient per positional input (None where
    the input needs none). Store what backward needs with ``ctx.save_for_backward(...)`` or as
    attributes of ``ctx``.
    """

    @staticmethod
    def forward(ctx, *arrays, **options):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, *grad_outputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **options):
        inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
        arrays = tuple(a.data if isinstance(a, Tensor) else a for a in args)
        backend.get_xp(*(a for a in arrays if hasattr(a, "shape")))  # refuse mixed backends early
        ctx = Context(cls, inputs)
        outputs = cls.forward(ctx, *arrays, **options)
        single = not isinstance(outputs, tuple)
        if single:
            outputs = (outputs,)
        record = _GRAD_ENABLED and any(ctx.needs_input_grad)
        results = []
        for index, out in enumerate(outputs):
            t = Tensor(out, requires_grad=record)
            if record:
                t._ctx, t._output_index = ctx, index
            results.append(t)
        if record:
            ctx.output_meta = tuple((o.shape, o.dtype) for o in outputs)
        else:
            ctx.saved = ()  # nothing will call backward; let the arrays go
        return results[0] if single else tuple(results)


def _as_array(data, dtype=None, like=None):
    """Turn data into an array: floats default to the default dtype, ints stay ints."""
    if isinstance(data, Tensor):
        data = data.data
    xp = backend.get_xp(like) if like is not None else backend.get_xp(data)
    if hasattr(data, "__array__") or hasattr(data, "__cuda_array_interface__"):
        array = xp.asarray(data)
        if dtype is not None:
            array = array.astype(dtype, copy=False)
        return array
    if dtype is None:
        probe = np.asarray(data)
        dtype = probe.dtype if probe.dtype.kind in "biu" else backend.get_default_dtype()
    return xp.asarray(data, dtype=dtype)


class Tensor:
    """An array with an optional gradient and the record of how it was computed."""

    __array_ufunc__ = None  # so numpy_array + tensor calls Tensor.__radd__, not NumPy's loop

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._ctx = None
        self._output_index = 0
        if self.requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"only floating tensors can require gradients, got dtype {self.data.dtype}")

    # ---- array-like properties -------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)
    size = property(lambda self: int(self.data.size))
    device = property(lambda self: backend.device_of(self.data))
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({backend.to_numpy(self.data)!r}{grad})"

    def numpy(self):
        """The data as a NumPy array: a copy from the GPU; on the CPU the same memory, as in torch
        (copy it before changing it)."""
        return backend.to_numpy(self.data)

    def item(self):
        return self.data.item()

    def detach(self) -> Tensor:
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def to(self, device: str) -> Tensor:
        """The data on ``device`` ('cpu' or 'gpu'), cut from the graph: a copy when it moves, the same
        array when it is there already; a leaf keeps requires_grad."""
        return Tensor(backend.to_device(self.data, device), requires_grad=self.requires_grad and self.is_leaf)

    def astype(self, dtype) -> Tensor:
        from minirec.autograd import ops

        return ops.Cast.apply(self, dtype=np.dtype(dtype))

    def zero_grad(self):
        self.grad = None

    # ---- backward --------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False):
        """Accumulate d(self)/d(leaf) into ``leaf.grad`` for every leaf that requires grad.

        ``grad`` defaults to 1 for a scalar; a non-scalar tensor needs an explicit ``grad``.
        A gradient has its tensor's dtype (a float64 product of a float32 parameter gives the
        parameter a float32 gradient). Gradients may share memory with each other (``a + b``
        hands both the same array): replace ``.grad`` rather than changing it in place.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no graph recorded)")
        xp = backend.get_xp(self.data)
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without grad needs a scalar, got shape {self.shape}")
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, dtype=self.dtype, like=self.data).copy()  # not the caller's buffer
            if grad.shape != self.data.shape:
                raise ValueError(f"grad of shape {tuple(grad.shape)} for a tensor of shape {self.shape}")
        if self._ctx is None:
            self.grad = grad if self.grad is None else self.grad + grad
            return
        # Gradients that have reached each node's outputs so far.
        pending = {id(self._ctx): [None] * len(self._ctx.output_meta)}
        pending[id(self._ctx)][self._output_index] = grad
        for ctx in _reverse_topological(self._ctx):
            grads_out = pending.pop(id(ctx), None)
            if grads_out is None:
                continue
            if ctx.freed:
                _ = ctx.saved_arrays  # raises GraphFreedError with its message
            grads_out = [
                g if g is not None else xp.zeros(shape, dtype=dtype)
                for g, (shape, dtype) in zip(grads_out, ctx.output_meta)
            ]
            ctx.retains_graph = retain_graph
            grads_in = ctx.function.backward(ctx, *grads_out)
            if not isinstance(grads_in, tuple):
                grads_in = (grads_in,)
            if len(grads_in) < len(ctx.inputs):
                raise RuntimeError(
                    f"{ctx.function.__name__}.backward returned {len(grads_in)} gradients "
                    f"for {len(ctx.inputs)} inputs"
                )
            for parent, needs, g in zip(ctx.inputs, ctx.needs_input_grad, grads_in):
                if not needs or g is None:
                    continue
                if g.shape != parent.data.shape:
                    raise RuntimeError(
                        f"{ctx.function.__name__}.backward returned a gradient of shape "
                        f"{tuple(g.shape)} for an input of shape {parent.shape}"
                    )
                if g.dtype != parent.dtype:  # a mixed-dtype op: the gradient takes the input's dtype
                    g = g.astype(parent.dtype)
                if parent._ctx is None:
                    parent.grad = g if parent.grad is None else parent.grad + g
                else:
                    slots = pending.setdefault(id(parent._ctx), [None] * len(parent._ctx.output_meta))
                    i = parent._output_index
                    slots[i] = g if slots[i] is None else slots[i] + g
            if not retain_graph:
                ctx.saved = ()
                ctx.freed = True

    # ---- operators (defined in ops.py, attached there) ----------------------------------------


def _reverse_topological(root: Context):
    """Contexts reachable from ``root``, each after every context that consumes its outputs."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:  # iterative DFS: a long recurrence unrolled step by step is a deep graph
        ctx, expanded = stack.pop()
        if expanded:
            order.append(ctx)
            continue
        if id(ctx) in visited:
            continue
        visited.add(id(ctx))
        stack.append((ctx, True))
        for parent in ctx.inputs:
            if parent is not None and parent._ctx is not None and id(parent._ctx) not in visited:
                stack.append((parent._ctx, False))
    return reversed(order)


def tensor(data, requires_grad: bool = False, dtype=None) -> Tensor:
    """Make a Tensor: Python floats and float lists get the default dtype (float32)."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


def is_number(x) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)
