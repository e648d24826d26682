"""What every recurrent cell shares: input checks, masks, directions, the registry.

A *cell* (one file per cell in this package) is one direction of one layer. It implements

* ``run(x, h0, mask)``: the fast path, through its fused ``…Recurrence`` Function whose
  backward is written by hand;
* ``reference_step(x_t, state)``: one step written with Tensor ops; `run_reference` loops it in
  Python and autograd derives its gradient (the slow oracle the fused Function must match);
* ``init_state(batch, xp, dtype)``, and ``parameter_count(input_size, hidden_size, **options)``,
  the closed form that `count_parameters()` must equal.

`Cell.__call__` validates the inputs and calls `run`; `RecurrentLayer` adds the backward
direction. Conventions (ARCHITECTURE.md): x is time-major (T, B, D); the state is a Tensor of
shape (B, H) — or a tuple of them (LSTM: (h, c)); the output y is (T, B, H_out).

Padding: ``mask`` (T, B) is True at real tokens. At a padded step the state is carried
unchanged and the output is zero, so a padded position changes nothing, and nothing flows back
through it: a sequence gives the same outputs, last state and gradients alone or in a padded
batch. Running the time-reversed batch with the same rule gives the backward direction of
right-padded sequences exactly (the padding comes first and just carries h0).
"""

from __future__ import annotations

import numpy as np

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function, Tensor
from minirec.kernels import get_kernel
from minirec.nn.module import Module

__all__ = [
    "Cell", "RecurrentLayer", "register", "get_cell", "cell_names", "mask_array", "blend",
    "project_inputs", "check_weight_dtype", "HiddenMatrixRecurrence", "NonFiniteError",
]

_REGISTRY: dict[str, type] = {}


class NonFiniteError(ValueError):
    """An input holds NaN or inf (a diverging model shows up here first)."""


def register(name: str):
    """Class decorator: make a cell constructible by name (``nn.RNN(cell=name, ...)``)."""

    def decorate(cls):
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return decorate


def cell_names() -> list[str]:
    return list(_REGISTRY)


def get_cell(name: str) -> type:
    from minirec import cells  # noqa: F401 - importing the package registers every cell

    try:
        return _REGISTRY[name.lower()]
    except KeyError:
        raise ValueError(f"unknown cell {name!r}; known cells: {', '.join(_REGISTRY)}") from None


def mask_array(mask, like):
    """The mask as an array of ``like``'s dtype (1 = real token, 0 = padding), or None."""
    if mask is None:
        return None
    data = mask.data if isinstance(mask, Tensor) else mask
    return data.astype(like.dtype)


def blend(m, new: Tensor, old: Tensor) -> Tensor:
    """m·new + (1 − m)·old with m (B, 1) of 0/1: the padded-step rule, with Tensor ops."""
    if m is None:
        return new
    return new * m + old * (1 - m)


def project_inputs(x: Tensor, weight, bias=None) -> Tensor:
    """x W (+ b) for every time step at once: one (T·B, D) @ (D, k) product, back to (T, B, k).

    This is the part of a cell that does not depend on h: done outside the recurrence, it is
    one large BLAS/cuBLAS call instead of T small ones (SRU §3.1).
    """
    T, B, D = x.shape
    u = x.reshape(T * B, D) @ weight
    if bias is not None:
        u = u + bias
    return u.reshape(T, B, weight.shape[1])


def check_weight_dtype(cell, x, weight):
    """The cell computes in x's dtype; weights of another dtype would upcast silently."""
    if weight.dtype != x.dtype:
        raise TypeError(
            f"{cell.name}: x has dtype {x.dtype} but the weights are {weight.dtype}; "
            "create the cell under the same default dtype (minirec.backend.set_default_dtype)"
        )


class HiddenMatrixRecurrence(Function):
    """The fused Function shared by the cells with an h-to-h matrix (GRU, MGU, SGU):
    (x_proj (T, B, k), U (H, k), h0 (B, H), mask, *params) → (y, h_last). Subclasses name their
    kernels ``<kernel>_forward(x_proj, U, *params, h0, mask)`` / ``<kernel>_backward``, which
    returns (∂x_proj, ∂U, *∂params, ∂h0); ``params`` are extra recurrent parameters (the
    reset-after GRU's b_n). The derivations are in each cell's docstring.
    """

    kernel = ""

    @staticmethod
    def forward(ctx, x_proj, U, h0, mask, *params):
        xp = backend.get_xp(x_proj, U, h0, *params)
        h, gates = get_kernel(ctx.function.kernel + "_forward", xp)(x_proj, U, *params, h0, mask)
        y = h if mask is None else h * mask[:, :, None]
        h_last = h[-1] if h.shape[0] else h0.copy()
        ctx.save_for_backward(U, h0, h, gates)
        ctx.mask = mask
        return y, h_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        U, h0, h, gates = ctx.saved_arrays
        xp = backend.get_xp(U, h0, grad_y)
        backward = get_kernel(ctx.function.kernel + "_backward", xp)
        grad_x_proj, grad_U, *grad_params, grad_h0 = backward(U, h0, ctx.mask, h, gates, grad_y, grad_h_last)
        return grad_x_proj, grad_U, grad_h0, None, *grad_params


def _as_tuple(state):
    return state if isinstance(state, tuple) else (state,)


def _raise_first_failed(xp, checks):
    """Raise the error of the first check whose device boolean is False; all of them are fetched
    in one transfer (on a GPU, one synchronisation instead of one per check)."""
    if checks:
        passed = xp.stack([flag for flag, _ in checks]).tolist()
        for ok, (_, error) in zip(passed, checks):
            if not ok:
                raise error


class Cell(Module):
    """One direction of a recurrent layer. Subclasses set ``state_shapes`` via `init_state`."""

    name = "cell"
    output_multiplier = 1  # y has hidden_size · output_multiplier features

    def __init__(self, input_size: int, hidden_size: int):
        if input_size < 1 or hidden_size < 1:
            raise ValueError(f"input_size and hidden_size must be positive, got {input_size}, {hidden_size}")
        self.input_size, self.hidden_size = int(input_size), int(hidden_size)

    # ---- to implement ----------------------------------------------------------------------
    def run(self, x: Tensor, h0, mask):
        """Fast path: (y, last state) for checked inputs; h0 already built (never None)."""
        raise NotImplementedError

    def reference_step(self, x_t: Tensor, state, t: int):
        """One step with Tensor ops: returns (y_t, new state). ``t`` indexes any precomputed
        per-step quantity (see `prepare_reference`)."""
        raise NotImplementedError

    def prepare_reference(self, x: Tensor):
        """Hook for work done once per sequence before the reference loop (e.g. SRU's
        batched projection). The default does nothing."""

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        raise NotImplementedError

    def init_state(self, batch: int, xp, dtype):
        """Zero initial state: a Tensor (B, H), or a tuple of them."""
        return Tensor(xp.zeros((batch, self.hidden_size), dtype=dtype))

    # ---- shared ----------------------------------------------------------------------------
    def check_inputs(self, x, h0, mask):
        if not isinstance(x, Tensor):
            x = Tensor(x)
        if x.ndim != 3:
            raise ValueError(f"{self.name}: x must be time-major (T, B, D), got shape {x.shape}")
        T, B, D = x.shape
        if D != self.input_size:
            raise ValueError(f"{self.name}: x has feature size {D}, the cell expects input_size={self.input_size}")
        if x.dtype.kind != "f":
            raise TypeError(f"{self.name}: x must be floating point, got dtype {x.dtype}")
        for weight in self.parameters():  # every cell, here once, not in each cell's run
            check_weight_dtype(self, x, weight)
        xp = backend.get_xp(x.data)
        value_checks = []  # (device boolean, its error): fetched together at the end, one host sync per call
        if x.size:
            value_checks.append((xp.isfinite(x.data).all(), NonFiniteError(f"{self.name}: x contains NaN or inf")))
        if mask is not None:
            m = mask.data if isinstance(mask, Tensor) else mask
            if not hasattr(m, "shape"):
                raise TypeError(f"{self.name}: mask must be an array (T, B), got {type(m).__name__}")
            if tuple(m.shape) != (T, B):
                raise ValueError(f"{self.name}: mask must have shape (T, B) = {(T, B)}, got {tuple(m.shape)}")
            if m.dtype.kind not in "bui" and m.dtype.kind != "f":
                raise TypeError(f"{self.name}: mask must be boolean or 0/1 numbers, got dtype {m.dtype}")
            if m.dtype.kind != "b" and m.size:
                only_01 = ((m == 0) | (m == 1)).all()
                value_checks.append((only_01, ValueError(f"{self.name}: mask must contain only 0 and 1")))
            backend.get_xp(x.data, m)
            mask = m
        state = self.init_state(B, xp, x.dtype)
        if h0 is None:
            _raise_first_failed(xp, value_checks)
            return x, state, mask
        if isinstance(state, tuple):
            if isinstance(h0, list):
                h0 = tuple(h0)
            if not isinstance(h0, tuple) or len(h0) != len(state):
                got = f"{len(h0)} tensor(s)" if isinstance(h0, tuple) else f"a {type(h0).__name__}"
                raise ValueError(f"{self.name}: h0 must be a tuple of {len(state)} tensors, got {got}")
        elif not isinstance(h0, Tensor):
            raise ValueError(f"{self.name}: h0 must be one Tensor of shape {state.shape}, got a {type(h0).__name__}")
        for g, t in zip(_as_tuple(h0), _as_tuple(state)):
            if not isinstance(g, Tensor) or g.shape != t.shape:
                shape = g.shape if isinstance(g, Tensor) else type(g).__name__
                raise ValueError(f"{self.name}: h0 must have shape {t.shape}, got {shape}")
            if g.dtype != x.dtype:
                raise TypeError(f"{self.name}: h0 has dtype {g.dtype} but x has {x.dtype}")
            backend.get_xp(x.data, g.data)
            if g.size:
                value_checks.append((xp.isfinite(g.data).all(), NonFiniteError(f"{self.name}: h0 contains NaN or inf")))
        _raise_first_failed(xp, value_checks)
        return x, h0, mask

    def __call__(self, x, h0=None, mask=None):
        x, h0, mask = self.check_inputs(x, h0, mask)
        return self.run(x, h0, mask)

    def run_reference(self, x, h0=None, mask=None):
        """The oracle: `reference_step` looped over time with Tensor ops (autograd backward)."""
        x, state, mask = self.check_inputs(x, h0, mask)
        self.prepare_reference(x)
        m = mask_array(mask, x.data)
        outputs = []
        for t in range(x.shape[0]):
            y_t, new_state = self.reference_step(x[t], state, t)
            if m is not None:
                m_t = Tensor(m[t][:, None])
                y_t = y_t * m_t
                new_state = tuple(blend(m_t, n, o) for n, o in zip(_as_tuple(new_state), _as_tuple(state)))
                new_state = new_state if isinstance(state, tuple) else new_state[0]
            outputs.append(y_t)
            state = new_state
        if outputs:
            y = ops.stack(outputs, axis=0)
        else:
            xp = backend.get_xp(x.data)
            y = Tensor(xp.zeros((0, x.shape[1], self.hidden_size * self.output_multiplier), dtype=x.dtype))
        return y, state

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


def _reverse_time(t):
    return None if t is None else t[::-1]


class RecurrentLayer(Module):
    """A cell in one or both directions: ``y, h_last = layer(x, h0=None, mask=None)``.

    Bidirectional: y is [y_forward, y_backward] concatenated on features; h0 and h_last stack
    the two directions on a new leading axis: (2, B, H) (tuples of them for LSTM).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, bidirectional: bool = False, **options):
        cls = get_cell(cell)
        self.bidirectional = bidirectional
        self.forward_cell = cls(input_size, hidden_size, **options)
        self.backward_cell = cls(input_size, hidden_size, **options) if bidirectional else None

    @property
    def output_size(self) -> int:
        cell = self.forward_cell
        return cell.hidden_size * cell.output_multiplier * (2 if self.bidirectional else 1)

    def _split_h0(self, h0):
        if h0 is None:
            return None, None
        parts = _as_tuple(h0)
        for p in parts:
            if not isinstance(p, Tensor) or p.ndim != 3 or p.shape[0] != 2:
                shape = p.shape if isinstance(p, Tensor) else type(p).__name__
                raise ValueError(f"bidirectional h0 must have shape (2, B, H), got {shape}")
        fwd = tuple(p[0] for p in parts)
        bwd = tuple(p[1] for p in parts)
        if not isinstance(h0, tuple):
            fwd, bwd = fwd[0], bwd[0]
        return fwd, bwd

    def forward(self, x, h0=None, mask=None):
        if not self.bidirectional:
            return self.forward_cell(x, h0, mask)
        if not isinstance(x, Tensor):
            x = Tensor(x)
        h0_f, h0_b = self._split_h0(h0)
        y_f, s_f = self.forward_cell(x, h0_f, mask)
        x_rev = x[::-1] if x.ndim == 3 else x
        y_b_rev, s_b = self.backward_cell(x_rev, h0_b, _reverse_time(mask))
        y = ops.concat([y_f, y_b_rev[::-1]], axis=-1)
        if isinstance(s_f, tuple):
            return y, tuple(ops.stack([a, b], axis=0) for a, b in zip(s_f, s_b))
        return y, ops.stack([s_f, s_b], axis=0)

    def count_parameters(self) -> int:
        return super().count_parameters()

    def extra_repr(self):
        return f"bidirectional={self.bidirectional}"


def as_float_mask(mask, xp, dtype):
    """Helper for kernels: mask as an xp array of dtype, or None."""
    if mask is None:
        return None
    return xp.asarray(mask).astype(dtype)


np_float_types = (np.float32, np.float64)
