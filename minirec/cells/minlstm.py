"""minLSTM (Feng et al. 2024, "Were RNNs All We Needed?", §3.2; CELLS.md).

The LSTM with gates independent of h_{t−1}, no output gate, no tanh, and the two gates
normalised so the state's scale does not depend on time (§3.2.3):

    f_t = σ(Linear_f(x_t)),   i_t = σ(Linear_i(x_t)),   h̃_t = Linear_h(x_t)
    f′_t = f_t / (f_t + i_t),   i′_t = i_t / (f_t + i_t)
    h_t = f′_t ⊙ h_{t−1} + i′_t ⊙ h̃_t

A linear recurrence h_t = a_t ⊙ h_{t−1} + b_t with a = f′, b = i′ ⊙ h̃, all from x alone.
Stable form of the normalised gates: with d = log f − log i = softplus(−k_i) − softplus(−k_f)
(k_f, k_i the pre-activations; log σ(k) = −softplus(−k)),

    f′ = 1 / (1 + i/f) = σ(d),   i′ = σ(−d) = 1 − f′,
    log f′ = log f − log(f + i) = −softplus(log i − log f) = −softplus(−d),   log i′ = −softplus(d).

Option ``mode``: ``"sequential"`` (loop over time), ``"parallel"`` (default; Blelloch scan), or
``"log"`` (Heinsen's log-space scan on log a = log f′, log b = log i′ + log g(h̃)). As for
minGRU (see `minirec.cells.mingru`), log mode applies g(x) = x + 0.5 (x ≥ 0), σ(x) (x < 0) to
the candidate — a different model, as in the paper — and ``g_activation=True`` gives the
sequential/parallel modes the same g (default False there). In log mode h0 must be > 0
(ValueError otherwise); the default state is g(0) = 0.5 where g applies, else 0.

Layout and init. One projection W (D, 3H), bias b (3H), columns [k_f | k_i | h̃], computed for
all steps at once outside the fused Function; init U(±1/√D) (nn.Linear, the paper's code).
Parameter count: 3·H·(D + 1).

Backward (`MinLSTMRecurrence`, by hand; kernels in `minirec.kernels.minrnn`): the reverse scan
δ_t = ∂L/∂h_t(direct) + ā_{t+1} δ_{t+1} gives ∂L/∂a_t = m_t δ_t h_{t−1}, ∂L/∂b_t = m_t δ_t,
∂L/∂h_0 = ā_1 δ_1 (ā = 1 at padded steps); then, with v = h̃ or g(h̃),

    ∂L/∂d = f′ i′ (∂L/∂a − ∂L/∂b v)               (a = σ(d), b = σ(−d) v)
    ∂L/∂k_f = ∂L/∂d (1 − f),   ∂L/∂k_i = −∂L/∂d (1 − i)     (∂ softplus(−k)/∂k = −σ(−k) = −(1 − σ(k)))
    ∂L/∂h̃ = ∂L/∂b i′ v′.
"""

from __future__ import annotations

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function
from minirec.cells.base import register
from minirec.cells.mingru import MinRNN, g_tensor
from minirec.kernels import get_kernel

__all__ = ["MinLSTM", "MinLSTMRecurrence"]


class MinLSTMRecurrence(Function):
    """Fused minLSTM: (u = [k_f | k_i | h̃] (T, B, 3H), h0 (B, H), mask) → (y, h_last)."""

    @staticmethod
    def forward(ctx, u, h0, mask, mode, g_activation):
        xp = backend.get_xp(u, h0)
        H = h0.shape[-1]
        k_f, k_i, x_tilde = u[..., :H], u[..., H : 2 * H], u[..., 2 * H :]
        h, f_prime = get_kernel("minlstm_forward", xp)(k_f, k_i, x_tilde, h0, mask, mode, g_activation)
        y = h if mask is None else h * mask[:, :, None]
        ctx.save_for_backward(h, h0, f_prime, k_f, k_i, x_tilde)
        ctx.mask, ctx.mode, ctx.g_activation = mask, mode, g_activation
        return y, (h[-1].copy() if h.shape[0] else h0.copy())

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        h, h0, f_prime, k_f, k_i, x_tilde = ctx.saved_arrays
        xp = backend.get_xp(h)
        mask = ctx.mask
        if h.shape[0] == 0:
            return xp.zeros(h.shape[:2] + (3 * h0.shape[-1],), dtype=h.dtype), grad_h_last, None
        grad_h = grad_y * mask[:, :, None] if mask is not None else grad_y.copy()
        grad_h[-1] += grad_h_last
        grad_k_f, grad_k_i, grad_x_tilde, grad_h0 = get_kernel("minlstm_backward", xp)(
            grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask, ctx.mode, ctx.g_activation
        )
        return xp.concatenate([grad_k_f, grad_k_i, grad_x_tilde], axis=-1), grad_h0, None


@register("minlstm")
class MinLSTM(MinRNN):
    """minLSTM: y_t = h_t, state h (B, H) (no cell state: h plays its role). Options: ``mode``
    ("sequential", "parallel", "log"), ``g_activation`` (g on the candidate outside log mode).
    Weight columns: [k_f | k_i | h̃]."""

    blocks = 3
    recurrence = MinLSTMRecurrence

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """W (D, 3H) and b (3H): 3·H·(D + 1), whatever the mode."""
        return 3 * hidden_size * (input_size + 1)

    def reference_step(self, x_t, h, t):
        """The paper's f′ = f / (f + i), i′ = i / (f + i), in the stable form the kernels use:
        f′ = σ(d), i′ = σ(−d), d = log f − log i = softplus(−k_i) − softplus(−k_f). As written,
        the quotient is 0/0 = NaN when both gates underflow (|x| ≥ 1e4 drives k_f, k_i to −∞)."""
        H = self.hidden_size
        u_t = self._u[t]
        d = ops.softplus(-u_t[:, H : 2 * H]) - ops.softplus(-u_t[:, :H])
        candidate = u_t[:, 2 * H :]
        if self.applies_g:
            candidate = g_tensor(candidate)
        h = ops.sigmoid(d) * h + ops.sigmoid(-d) * candidate
        return h, h
