"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?", §3.1; CELLS.md).

The GRU with its gate and candidate made independent of h_{t−1} (§3.1.1) and no tanh on the
candidate (§3.1.2):

    z_t = σ(Linear_z(x_t))                          update gate
    h̃_t = Linear_h(x_t)                             candidate
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ h̃_t

So h_t = a_t ⊙ h_{t−1} + b_t with a_t = 1 − z_t, b_t = z_t ⊙ h̃_t, both computed from x alone:
every h_t comes out of one linear scan (`minirec.kernels.scan`). Option ``mode``:

(The three modes choose the reference kernels' solver; the numba CPU kernels run one fused
sequential loop for every mode, computing the same function — `minirec.kernels.cpu.minrnn`
says why.)

* ``"sequential"``: the scan as a loop over time;
* ``"parallel"`` (default): Blelloch's parallel scan — the same numbers up to rounding;
* ``"log"``: the paper's log-space scan (Heinsen 2023), log h_t = a*_t + logcumsumexp_t(log b_t − a*_t)
  with a*_t = Σ_{s≤t} log a_s, log a_t = log(1 − z_t) = −softplus(k_t), log z_t = −softplus(−k_t)
  (k_t the gate pre-activation) and log b_t = log z_t + log g(h̃_t). The log needs h̃ > 0, so this
  mode applies g(x) = x + 0.5 (x ≥ 0), σ(x) (x < 0) to the candidate: **it is a different
  model**, h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ g(h̃_t), as in the paper. ``g_activation=True``
  applies g in the sequential and parallel modes too, so that all three compute this same
  function (tested). ``g_activation`` defaults to False in those modes; in log mode it is
  always on (passing False there is an error).

Initial state. In log mode h_0 enters as log h_0 (prepended with a zero log-coefficient), so a
given h0 must be > 0 (checked, ValueError). The default state is 0 without g and g(0) = 0.5
whenever g applies (log mode or ``g_activation=True``): the paper's log-space code feeds
log g(h_0), and g(0) = 0.5 is its value for h_0 = 0; a user-given h0 is used as is.

Layout and init. One projection W (D, 2H), bias b (2H), columns [k | h̃]: u = x W + b computed
for all T steps at once (one matmul, autograd) outside the fused Function; the bias is outside
the recurrence. Init as the paper's nn.Linear: W, b ~ U(±1/√D).
Parameter count: 2·H·(D + 1).

Backward (`MinGRURecurrence`, by hand; kernels in `minirec.kernels.minrnn`). With δ_t = ∂L/∂h_t
through every later step, ā the padding-aware coefficient (1 at padded steps):

    δ_T = ∂L/∂h_T(direct),   δ_t = ∂L/∂h_t(direct) + ā_{t+1} δ_{t+1}      (a reverse linear scan)
    ∂L/∂a_t = m_t δ_t h_{t−1},   ∂L/∂b_t = m_t δ_t,   ∂L/∂h_0 = ā_1 δ_1
    ∂L/∂k_t = z_t (1 − z_t) (∂L/∂b_t v_t − ∂L/∂a_t),   ∂L/∂h̃_t = ∂L/∂b_t z_t v′_t

with v = h̃ (v′ = 1) or v = g(h̃). The log mode has the same gradient: it solves the same
recurrence in other arithmetic (derivation in `minirec.kernels.minrnn`). Padding: a padded
step has a = 1, b = 0 and y_t = 0, so δ passes through it unchanged and it gets no gradient.
"""

from __future__ import annotations

import math

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function, Tensor
from minirec.cells.base import Cell, mask_array, project_inputs, register
from minirec.kernels import get_kernel, minrnn  # importing minrnn registers the mingru/minlstm kernels
from minirec.nn.layers import uniform_parameter

__all__ = ["MinRNN", "MinGRU", "MinGRURecurrence", "g_tensor", "resolve_g_activation", "check_positive_h0"]


def resolve_g_activation(mode, g_activation):
    """Validate ``mode`` and return whether g applies to the candidate."""
    minrnn.check_mode(mode)
    if mode == "log":
        if g_activation is False:
            raise ValueError("mode='log' always applies g to the candidate (h̃ must be positive); "
                             "drop g_activation=False")
        return True
    if g_activation is None:
        return False
    if not isinstance(g_activation, bool):
        raise TypeError(f"g_activation must be True or False, got {g_activation!r}")
    return g_activation


def g_tensor(x: Tensor) -> Tensor:
    """g(x) = x + 0.5 (x ≥ 0), σ(x) (x < 0), with Tensor ops (for the reference step)."""
    return ops.where(x.data >= 0, x + 0.5, ops.sigmoid(x))


def check_positive_h0(name, h0):
    """Log mode takes log h0: refuse h0 ≤ 0 with a message that says why."""
    xp = backend.get_xp(h0.data)
    if h0.size and not bool((h0.data > 0).all()):
        raise ValueError(f"{name}: mode='log' needs an initial state h0 > 0 everywhere (it enters as log h0); "
                         f"got min(h0) = {float(xp.min(h0.data))}")


def _h_last(h, h0):
    return h[-1].copy() if h.shape[0] else h0.copy()


class MinGRURecurrence(Function):
    """Fused minGRU over a sequence: (u = [k | h̃] (T, B, 2H), h0 (B, H), mask) → (y, h_last)."""

    @staticmethod
    def forward(ctx, u, h0, mask, mode, g_activation):
        xp = backend.get_xp(u, h0)
        H = h0.shape[-1]
        k, x_tilde = u[..., :H], u[..., H:]
        h, z = get_kernel("mingru_forward", xp)(k, x_tilde, h0, mask, mode, g_activation)
        y = h if mask is None else h * mask[:, :, None]
        ctx.save_for_backward(h, h0, z, x_tilde)
        ctx.mask, ctx.mode, ctx.g_activation = mask, mode, g_activation
        return y, _h_last(h, h0)

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        h, h0, z, x_tilde = ctx.saved_arrays
        xp = backend.get_xp(h)
        mask = ctx.mask
        if h.shape[0] == 0:
            return xp.zeros(h.shape[:2] + (2 * h0.shape[-1],), dtype=h.dtype), grad_h_last, None
        grad_h = grad_y * mask[:, :, None] if mask is not None else grad_y.copy()
        grad_h[-1] += grad_h_last
        grad_k, grad_x_tilde, grad_h0 = get_kernel("mingru_backward", xp)(
            grad_h, h, h0, z, x_tilde, mask, ctx.mode, ctx.g_activation
        )
        return xp.concatenate([grad_k, grad_x_tilde], axis=-1), grad_h0, None


class MinRNN(Cell):
    """What minGRU and minLSTM share: one projection W (D, k·H) + b, the modes, h0 and extra_repr.

    Subclasses set ``blocks`` (k) and ``recurrence`` (their fused Function) and write
    `reference_step`.
    """

    blocks = 0
    recurrence = None

    def __init__(self, input_size: int, hidden_size: int, mode: str = "parallel", g_activation: bool | None = None):
        super().__init__(input_size, hidden_size)
        self.applies_g = resolve_g_activation(mode, g_activation)
        self.mode = mode
        bound = 1 / math.sqrt(input_size)
        self.weight = uniform_parameter((input_size, self.blocks * hidden_size), bound)
        self.bias = uniform_parameter((self.blocks * hidden_size,), bound)

    def init_state(self, batch, xp, dtype):
        """Zeros, or g(0) = 0.5 where g applies (log h0 must exist in log mode)."""
        fill = 0.5 if self.applies_g else 0.0
        return Tensor(xp.full((batch, self.hidden_size), fill, dtype=dtype))

    def check_inputs(self, x, h0, mask):
        x, h0, mask = super().check_inputs(x, h0, mask)
        if self.mode == "log":
            check_positive_h0(self.name, h0)
        return x, h0, mask

    def run(self, x, h0, mask):
        u = project_inputs(x, self.weight, self.bias)
        return self.recurrence.apply(u, h0, mask_array(mask, x.data), mode=self.mode, g_activation=self.applies_g)

    def prepare_reference(self, x):
        self._u = project_inputs(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, mode={self.mode!r}, g={self.applies_g}"


@register("mingru")
class MinGRU(MinRNN):
    """minGRU: y_t = h_t, state h (B, H). Options: ``mode`` ("sequential", "parallel", "log"),
    ``g_activation`` (apply g to the candidate outside log mode; default False).
    Weight columns: [k | h̃]."""

    blocks = 2
    recurrence = MinGRURecurrence

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """W (D, 2H) and b (2H): 2·H·(D + 1), whatever the mode."""
        return 2 * hidden_size * (input_size + 1)

    def reference_step(self, x_t, h, t):
        H = self.hidden_size
        u_t = self._u[t]
        z = ops.sigmoid(u_t[:, :H])
        candidate = u_t[:, H:]
        if self.applies_g:
            candidate = g_tensor(candidate)
        h = (1 - z) * h + z * candidate
        return h, h
