"""Gradient checks: the analytic backward against central finite differences in float64.

The scalar checked is a random projection of the outputs, L = Σ_k ⟨w_k, fn(inputs)_k⟩, so a
function with many outputs needs only one backward pass. Three modes:

* ``"gradient"``: ∂L/∂x for every element of every input, numerically with
  (L(x + εe_i) − L(x − εe_i)) / 2ε: two forward passes per element. Locates the worst entry.
* ``"jacobian"``: the full Jacobian of every output, numerically (two forward passes per input
  element) and analytically (one backward per output element). For small tensors.
* ``"projection"``: for random directions u, compare ⟨∂L/∂x, u⟩ with the directional derivative
  (L(x + εu) − L(x − εu)) / 2ε: two forward passes per projection, whatever the size
  (the cheap HIPS-autograd style check for large tensors).
``"auto"`` picks "gradient" up to ``max_elements`` input elements, else "projection".

Why float64: the central difference has truncation error O(ε²) and rounding error
O(u·|L|/ε) (u the unit round-off). In float64 (u ≈ 1e-16) ε = 1e-6 balances them near 1e-10;
in float32 (u ≈ 6e-8) the best step still leaves an error of about u^(2/3) ≈ 1e-5 of |L| (more
when L sums many outputs, as it does here), too loose to catch a subtle bug.

The relative error of an input is its worst absolute error divided by the scale of its gradient
(the largest |entry| of analytic or numeric gradient): entries that are ~0 do not blow it up.
That alone would let two wrong gradients through (as torch.autograd.gradcheck's
|a − n| ≤ atol + rtol·|n| does): an error confined to entries about 1e-6 of the largest, and an
input whose whole gradient is below ``atol``. So in "gradient" mode every entry must also agree
to within the rounding noise of its own finite difference, ``|a_j − n_j| ≤ noise +
1e-5·|n_j|``, where noise = 100·u·Σ|w·fn(x)| / ε bounds the rounding in L(x ± εe_j) (u the unit
round-off; the factor covers rounding inside fn, not only in the final sum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from minirec import backend
from minirec.autograd.function import Tensor, no_grad

__all__ = ["gradcheck", "GradcheckError", "GradcheckResult", "InputReport"]

NOISE_FACTOR = 100  # rounding inside fn, over the unit round-off of the final sum (module docstring)
ENTRY_RTOL = 1e-5  # an entry's own relative tolerance: central differences are far better than this


class GradcheckError(AssertionError):
    """The analytic gradient disagrees with finite differences, or something was not finite."""


@dataclass
class InputReport:
    index: int
    shape: tuple
    max_abs_error: float
    rel_error: float
    worst_at: tuple | None  # element (or Jacobian entry) with the largest error; None for projections
    analytic: float
    numeric: float
    # "gradient" mode: the worst entry beyond its finite difference's noise, as (where, analytic,
    # numeric, allowed error); None when every entry is within it
    entry_outside: tuple | None = None


@dataclass
class GradcheckResult:
    mode: str
    passed: bool
    inputs: list = field(default_factory=list)
    rtol: float = 1e-6
    atol: float = 1e-9

    @property
    def max_abs_error(self) -> float:
        return max((r.max_abs_error for r in self.inputs), default=0.0)

    @property
    def max_rel_error(self) -> float:
        return max((r.rel_error for r in self.inputs), default=0.0)

    def __str__(self):
        lines = [f"gradcheck ({self.mode}): {'passed' if self.passed else 'FAILED'}"]
        for r in self.inputs:
            where = "" if r.worst_at is None else f" at {r.worst_at}"
            lines.append(
                f"  input {r.index} {r.shape}: max abs error {r.max_abs_error:.3e}, "
                f"relative {r.rel_error:.3e}{where} (analytic {r.analytic:.6g}, numeric {r.numeric:.6g})"
            )
            if r.entry_outside is not None:
                at, a, n, allowed = r.entry_outside
                lines.append(f"    entry {at}: analytic {a:.6g}, numeric {n:.6g}: off by {abs(a - n):.3e}, "
                             f"more than its finite difference's noise {allowed:.3e}")
        return "\n".join(lines)


def _outputs_tuple(out):
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, Tensor)]


def _check_finite(name, array):
    xp = backend.get_xp(array)
    if not bool(xp.all(xp.isfinite(array))):
        raise GradcheckError(f"gradcheck: {name} contains NaN or inf; the check is meaningless there")


def gradcheck(
    fn,
    inputs,
    *,
    eps: float = 1e-6,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    mode: str = "auto",
    n_projections: int = 3,
    max_elements: int = 4000,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> GradcheckResult:
    """Check the backward of ``fn(*inputs)`` for every input tensor that requires grad.

    An input passes when its relative error is below ``rtol`` or its worst absolute error is
    below ``atol`` (for gradients that are zero up to rounding). Returns a `GradcheckResult`;
    raises `GradcheckError` on failure unless ``raise_on_failure=False``.
    """
    inputs = list(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no input requires grad")
    for i in checked:
        # The analytic gradient is read from .grad: only a leaf has one, and a tensor given twice
        # would have it read (and cleared) for its first position only.
        if not inputs[i].is_leaf:
            raise ValueError(f"gradcheck: input {i} is computed from other tensors, not a leaf; check those "
                             "(or pass a detached copy that requires grad)")
        twins = [j for j in checked if inputs[j] is inputs[i]]
        if len(twins) > 1:
            raise ValueError(f"gradcheck: inputs {twins} are the same tensor; pass it once")
        if inputs[i].dtype != np.float64:
            raise TypeError(
                f"gradcheck: input {i} is {inputs[i].dtype}; use float64 (finite differences in "
                "float32 cannot resolve errors below ~1e-5 of the checked scalar, even at the best step)"
            )
        if not inputs[i].data.flags.c_contiguous:
            inputs[i].data = inputs[i].data.copy()  # perturbing in place needs a flat view
        _check_finite(f"input {i}", inputs[i].data)
    xp = backend.get_xp(*(inputs[i].data for i in checked))
    # Its own stream: weights drawn like the inputs (same seed) could line up with them.
    rng = np.random.default_rng((seed, 0x9C))

    with no_grad():
        base = _outputs_tuple(fn(*inputs))
    if not base:
        raise ValueError("gradcheck: fn returned no Tensor")
    for k, o in enumerate(base):
        _check_finite(f"output {k}", o.data)
    weights = [xp.asarray(rng.standard_normal(o.shape)) for o in base]
    magnitude = sum(float(xp.abs(w * o.data).sum()) for w, o in zip(weights, base))
    noise = NOISE_FACTOR * np.finfo(np.float64).eps * magnitude / eps

    def loss_value():
        with no_grad():
            outs = _outputs_tuple(fn(*inputs))
        return float(sum(float((w * o.data).sum()) for w, o in zip(weights, outs)))

    def analytic_vjp(out_weights):
        for i in checked:
            inputs[i].grad = None
        outs = _outputs_tuple(fn(*inputs))
        total = None
        for w, o in zip(out_weights, outs):
            if o.requires_grad:
                term = (o * Tensor(w)).sum()
                total = term if total is None else total + term
        if total is None:
            return [xp.zeros_like(inputs[i].data) for i in checked]
        total.backward()
        grads = []
        for i in checked:
            g = inputs[i].grad if inputs[i].grad is not None else xp.zeros_like(inputs[i].data)
            _check_finite(f"the analytic gradient of input {i}", g)
            grads.append(g)
            inputs[i].grad = None
        return grads

    n_elements = sum(inputs[i].size for i in checked)
    if mode == "auto":
        mode = "gradient" if n_elements <= max_elements else "projection"
    if mode == "gradient":
        reports = _check_gradient(inputs, checked, eps, loss_value, analytic_vjp(weights), noise)
    elif mode == "jacobian":
        reports = _check_jacobian(inputs, checked, eps, fn, base, analytic_vjp, xp)
    elif mode == "projection":
        reports = _check_projection(inputs, checked, eps, loss_value, analytic_vjp(weights), n_projections, rng, xp)
    else:
        raise ValueError(f"gradcheck: unknown mode {mode!r}; use auto, gradient, jacobian or projection")

    passed = all((r.rel_error < rtol or r.max_abs_error < atol) and r.entry_outside is None for r in reports)
    result = GradcheckResult(mode=mode, passed=passed, inputs=reports, rtol=rtol, atol=atol)
    if not passed and raise_on_failure:
        raise GradcheckError(str(result))
    return result


def _central_difference(inputs, i, flat_index, delta, loss_value):
    flat = inputs[i].data.reshape(-1)
    original = float(flat[flat_index])
    flat[flat_index] = original + delta
    plus = loss_value()
    flat[flat_index] = original - delta
    minus = loss_value()
    flat[flat_index] = original
    return plus, minus


def _report(index, shape, analytic, numeric, worst_at_fn):
    analytic = backend.to_numpy(analytic).astype(np.float64)
    numeric = backend.to_numpy(numeric).astype(np.float64)
    if not np.all(np.isfinite(numeric)):
        raise GradcheckError(f"gradcheck: the numeric gradient of input {index} is not finite")
    err = np.abs(analytic - numeric)
    flat_worst = int(np.argmax(err)) if err.size else 0
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0), 1e-300)
    worst = float(err.reshape(-1)[flat_worst]) if err.size else 0.0
    return InputReport(
        index=index,
        shape=tuple(shape),
        max_abs_error=worst,
        rel_error=worst / scale,
        worst_at=worst_at_fn(flat_worst) if err.size else None,
        analytic=float(analytic.reshape(-1)[flat_worst]) if err.size else 0.0,
        numeric=float(numeric.reshape(-1)[flat_worst]) if err.size else 0.0,
    )


def _check_gradient(inputs, checked, eps, loss_value, analytic, noise):
    reports = []
    for i, grad in zip(checked, analytic):
        numeric = np.empty(inputs[i].size)
        for j in range(inputs[i].size):
            plus, minus = _central_difference(inputs, i, j, eps, loss_value)
            numeric[j] = (plus - minus) / (2 * eps)
        shape = inputs[i].shape
        def locate(k, s=shape):
            return tuple(int(v) for v in np.unravel_index(k, s))

        report = _report(i, shape, grad.reshape(-1), numeric, locate)
        analytic_flat = backend.to_numpy(grad).reshape(-1).astype(np.float64)
        allowed = noise + ENTRY_RTOL * np.abs(numeric)
        excess = np.abs(analytic_flat - numeric) / allowed
        if excess.size and excess.max() > 1:
            k = int(np.argmax(excess))
            report.entry_outside = (locate(k), float(analytic_flat[k]), float(numeric[k]), float(allowed[k]))
        reports.append(report)
    return reports


def _check_jacobian(inputs, checked, eps, fn, base, analytic_vjp, xp):
    out_sizes = [o.size for o in base]
    n_out = sum(out_sizes)

    def all_outputs():
        with no_grad():
            outs = _outputs_tuple(fn(*inputs))
        return np.concatenate([backend.to_numpy(o.data).reshape(-1).astype(np.float64) for o in outs])

    numeric = {}
    for i in checked:
        cols = []
        flat = inputs[i].data.reshape(-1)
        for j in range(inputs[i].size):
            original = float(flat[j])
            flat[j] = original + eps
            plus = all_outputs()
            flat[j] = original - eps
            minus = all_outputs()
            flat[j] = original
            cols.append((plus - minus) / (2 * eps))
        numeric[i] = np.stack(cols, axis=1) if cols else np.zeros((n_out, 0))
    analytic = {i: np.zeros((n_out, inputs[i].size)) for i in checked}
    row = 0
    for k, o in enumerate(base):
        for e in range(o.size):
            weights = [xp.zeros(b.shape, dtype=b.dtype) for b in base]
            weights[k].reshape(-1)[e] = 1
            for i, g in zip(checked, analytic_vjp(weights)):
                analytic[i][row] = backend.to_numpy(g).reshape(-1)
            row += 1
    return [
        _report(i, inputs[i].shape, analytic[i], numeric[i], lambda k, n=inputs[i].size: divmod(k, max(n, 1)))
        for i in checked
    ]


def _check_projection(inputs, checked, eps, loss_value, analytic, n_projections, rng, xp):
    per_input = {i: ([], []) for i in checked}
    for _ in range(n_projections):
        for i, grad in zip(checked, analytic):
            u = xp.asarray(rng.standard_normal(inputs[i].shape))
            original = inputs[i].data.copy()
            inputs[i].data[...] = original + eps * u
            plus = loss_value()
            inputs[i].data[...] = original - eps * u
            minus = loss_value()
            inputs[i].data[...] = original
            per_input[i][0].append(float((grad * u).sum()))
            per_input[i][1].append((plus - minus) / (2 * eps))
    return [
        _report(i, inputs[i].shape, np.array(a), np.array(n), lambda k: None) for i, (a, n) in per_input.items()
    ]
