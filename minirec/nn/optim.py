"""Optimisers (SGD with momentum, Adam) and gradient-norm clipping.

Updates are done on raw arrays in place, outside the graph. Each optimiser has a state dict
(step count and moment buffers) so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from minirec import backend
from minirec.kernels import get_kernel
from minirec.kernels import optim as _adam_reference  # noqa: F401 - registers the reference

__all__ = ["SGD", "Adam", "clip_grad_norm"]


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        _check_number("lr", lr)
        self.lr = lr
        self.step_count = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.step_count += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self._update(i, p)

    def _update(self, i, p):
        raise NotImplementedError

    def _buffers(self) -> dict:
        return {}

    def _counters(self) -> dict:
        """Per-parameter integer counters (index → int) saved beside the buffers."""
        return {}

    def state_dict(self) -> dict:
        state = {"lr": self.lr, "step_count": self.step_count}
        for name, buffers in self._buffers().items():
            for i, b in buffers.items():
                state[f"{name}.{i}"] = backend.to_numpy(b).copy()
        for name, counters in self._counters().items():
            for i, n in counters.items():
                state[f"{name}.{i}"] = int(n)
        return state

    def load_state_dict(self, state: dict):
        """Load a `state_dict`: everything is checked first (keys, parameter indices, buffer
        shapes), so a state that does not fit raises one error listing the problems and changes
        nothing. Buffers are copied: the optimiser never shares memory with ``state``."""
        buffers, counters = self._buffers(), self._counters()
        problems = [f"missing {key!r}" for key in ("lr", "step_count") if key not in state]
        loaded = {name: {} for name in (*buffers, *counters)}
        for key, value in state.items():
            if key in ("lr", "step_count"):
                continue
            name, _, index = key.rpartition(".")
            if name not in loaded or not index.isdigit():
                problems.append(f"{key!r} is not a {type(self).__name__} state entry (from another optimiser?)")
            elif int(index) >= len(self.params):
                problems.append(f"{key!r}: there are only {len(self.params)} parameters")
            elif name in counters:
                loaded[name][int(index)] = int(value)
            elif tuple(np.shape(value)) != self.params[int(index)].shape:
                problems.append(f"{key!r}: shape {tuple(np.shape(value))}, parameter {self.params[int(index)].shape}")
            else:
                param = self.params[int(index)]
                loaded[name][int(index)] = backend.get_xp(param.data).array(value, dtype=param.dtype)  # a copy
        if "lr" in state and not (np.ndim(state["lr"]) == 0 and math.isfinite(float(state["lr"]))
                                  and float(state["lr"]) >= 0):
            problems.append(f"lr must be a finite number >= 0, got {state['lr']!r}")
        if problems:
            raise ValueError(f"{type(self).__name__}.load_state_dict: " + "; ".join(problems))
        self.lr = float(state["lr"])
        self.step_count = int(state["step_count"])
        for name, target in (*buffers.items(), *counters.items()):
            target.clear()
            target.update(loaded[name])
        return self


class SGD(Optimizer):
    """p ← p − lr·(g + wd·p), with heavy-ball momentum v ← μv + g when momentum > 0."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr)
        _check_at_least_zero(momentum=momentum, weight_decay=weight_decay)
        self.momentum, self.weight_decay = momentum, weight_decay
        self.velocity = {}

    def _update(self, i, p):
        g = p.grad
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            v = self.velocity.get(i)
            v = g.copy() if v is None else self.momentum * v + g
            self.velocity[i] = v
            g = v
        p.data -= self.lr * g

    def _buffers(self):
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction; weight decay added to the gradient. Each
    parameter counts its own steps (``t``), as in the paper: one whose first gradient comes
    late still gets the first step's bias correction."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        beta1, beta2 = betas
        _check_number("beta1", beta1)
        _check_number("beta2", beta2)
        if not (0 <= beta1 < 1 and 0 <= beta2 < 1):
            raise ValueError(f"Adam betas must be in [0, 1), got {betas}")
        _check_number("eps", eps)
        if not eps > 0:
            raise ValueError(f"Adam eps must be > 0, got {eps}")
        _check_at_least_zero(weight_decay=weight_decay)
        self.beta1, self.beta2 = beta1, beta2
        self.eps, self.weight_decay = eps, weight_decay
        self.m, self.v, self.t = {}, {}, {}

    def _update(self, i, p):
        xp = backend.get_xp(p.data)
        if i not in self.m:
            self.m[i], self.v[i], self.t[i] = xp.zeros_like(p.data), xp.zeros_like(p.data), 0
        # (moments without a count: a state saved before the counts were kept; every parameter
        # then took every step)
        t = self.t[i] = self.t.get(i, self.step_count - 1) + 1
        # One fused pass on the CPU (the update is memory-bound: an embedding table is most of
        # a classifier's step otherwise); the whole-array reference elsewhere. Equal bit for bit.
        update = get_kernel("adam_update", xp)
        update(p.data, p.grad, self.m[i], self.v[i], lr=self.lr, beta1=self.beta1, beta2=self.beta2,
               eps=self.eps, weight_decay=self.weight_decay, step=t)

    def _buffers(self):
        return {"m": self.m, "v": self.v}

    def _counters(self):
        return {"t": self.t}


def _check_at_least_zero(**values):
    for name, value in values.items():
        _check_number(name, value)


def _check_number(name, value, allow_inf=False):
    """A real number >= 0: NaN passes ``value < 0`` (and then poisons every weight), a string or
    a bool would fail or mislead later without naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if math.isnan(value) or (math.isinf(value) and not allow_inf) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (inf or nan if a gradient is not finite). ``max_norm``
    must be >= 0 (inf: measure only); NaN would silently turn clipping off, -1 flip the gradients.
    """
    _check_number("max_norm", max_norm, allow_inf=True)
    params = list(params)  # an iterator would be used up before the scaling loop
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    sum_of_squares = get_kernel("sum_of_squares", backend.get_xp(grads[0]))
    squares = [sum_of_squares(g) for g in grads]  # float64 sums on the gradients' device
    total = math.sqrt(float(sum(squares[1:], squares[0])))  # one host transfer for all of them (GPU: one sync)
    if math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * p.grad.dtype.type(scale)  # not in place: grads may share arrays
    return total
