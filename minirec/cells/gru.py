"""GRU: gated recurrent unit (Cho et al. 2014, as written in Wang & Jiang 2019 §3.1).

    z_t = σ(W_z [h_{t−1}, x_t] + b_z)                         (1) update gate
    r_t = σ(W_r [h_{t−1}, x_t] + b_r)                         (2) reset gate
    ĥ_t = tanh(W_h [r_t ⊙ h_{t−1}, x_t] + b_h)                (3) candidate
    h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ ĥ_t                     (4)
    y_t = h_t

(Equation numbers are local to this docstring.) The reset gate acts *before* the product with the
recurrent weights (Cho et al.'s form; cuDNN's "reset after" variant r ⊙ (U_h h) is a different cell).
Each W_k [h, x] is split into a recurrent part and an input part, W_k [h, x] = h U_k + x W_x,k,
stored as (in, out) matrices like `Linear`:

* ``input_weight`` (D, 3H) = [W_x,z | W_x,r | W_x,h], applied to the whole sequence in one
  product with autograd, outside the recurrence: x_proj = x W_x + b;
* ``recurrent_weight`` (H, 3H) = [U_z | U_r | U_h], used inside the fused `GRURecurrence`;
* ``bias`` (3H,) = [b_z | b_r | b_h]: one bias per gate. CELLS.md writes the GRU without biases;
  we include them, as common implementations do, and only one per gate: cuDNN's and PyTorch's
  second "recurrent" bias would only duplicate it in this reset-before form.

Parameter count: 3·(H·(H + D) + H) = 3H(H + D + 1).
Init: every parameter U(±1/√H), the common practice (PyTorch's nn.GRU default).

Backward (hand-derived, `minirec.kernels.gru.gru_backward`). With δ_t = ∂L/∂h_t (total) and
m_t the mask (1 = real token), going from t = T down to 1:
    δ_t  += m_t ȳ_t,            dh = m_t δ_t                    (gradient reaching step t's new state)
    ∂a_h  = dh ⊙ z_t ⊙ (1 − ĥ_t²),          ∂(r ⊙ h) = ∂a_h U_hᵀ
    ∂a_z  = dh ⊙ (ĥ_t − h_{t−1}) ⊙ z_t(1 − z_t)
    ∂a_r  = ∂(r ⊙ h) ⊙ h_{t−1} ⊙ r_t(1 − r_t)
    δ_{t−1} = (1 − m_t) δ_t + dh ⊙ (1 − z_t) + ∂(r ⊙ h) ⊙ r_t + [∂a_z, ∂a_r] [U_z, U_r]ᵀ
    ∂x_proj_t = [∂a_z, ∂a_r, ∂a_h],   ∂U_{z,r} = Σ_t h_{t−1}ᵀ [∂a_z, ∂a_r],   ∂U_h = Σ_t (r_t ⊙ h_{t−1})ᵀ ∂a_h,
    ∂h_0 = δ_0.  Autograd then carries ∂x_proj through x W_x + b to ∂x, ∂W_x, ∂b.
A padded step (m_t = 0) passes δ through unchanged and contributes no gradient.

Option ``reset_after=True``: the form of cuDNN, PyTorch and Keras (Cho et al.'s appendix calls
the two forms equivalent in spirit; they are different functions), where the reset gate scales
the recurrent part of the candidate *after* the product, and that part has its own bias b_n:

    ĥ_t = tanh(x_t W_x,h + b_h + r_t ⊙ (h_{t−1} U_h + b_n))                (3′)

Every block of U then multiplies the same h_{t−1}, so one product per step serves all gates.
Extra parameter ``recurrent_bias`` (H,) = b_n; count 3H(H + D + 1) + H. Backward
(`minirec.kernels.gru.gru_reset_after_backward`), with n_t = h_{t−1} U_h + b_n saved:
    ∂a_h = dh ⊙ z_t ⊙ (1 − ĥ_t²),   ∂n = ∂a_h ⊙ r_t,   ∂a_r = ∂a_h ⊙ n_t ⊙ r_t(1 − r_t),
    ∂a_z as above,   δ_{t−1} = (1 − m_t) δ_t + dh ⊙ (1 − z_t) + [∂a_z, ∂a_r, ∂n] Uᵀ,
    ∂U = Σ_t h_{t−1}ᵀ [∂a_z, ∂a_r, ∂n],   ∂b_n = Σ_t ∂n.
PyTorch's nn.GRU blends h = z ⊙ h_{t−1} + (1 − z) ⊙ ĥ: its z is this cell's 1 − z, so its
update-gate weights and biases are this cell's negated (`minirec.interop` maps them exactly).
"""

from __future__ import annotations

import math

from minirec.autograd import ops
from minirec.cells.base import Cell, HiddenMatrixRecurrence, mask_array, project_inputs, register
from minirec.kernels import gru as _gru_kernels  # noqa: F401 - registers the reference loops
from minirec.nn.layers import uniform_parameter

__all__ = ["GRU", "GRURecurrence", "GRUResetAfterRecurrence"]


class GRURecurrence(HiddenMatrixRecurrence):
    """Fused GRU over a whole sequence: (x_proj, U, h0, mask) → (y, h_last)."""

    kernel = "gru"


class GRUResetAfterRecurrence(HiddenMatrixRecurrence):
    """Fused reset-after GRU over a whole sequence: (x_proj, U, h0, mask, b_n) → (y, h_last)."""

    kernel = "gru_reset_after"


@register("gru")
class GRU(Cell):
    """GRU layer (one direction): y_t = h_t, the state is h (B, H)."""

    def __init__(self, input_size: int, hidden_size: int, reset_after: bool = False):
        super().__init__(input_size, hidden_size)
        if not isinstance(reset_after, bool):
            raise TypeError(f"gru: reset_after must be True or False, got {reset_after!r}")
        self.reset_after = reset_after
        D, H = self.input_size, self.hidden_size
        bound = 1 / math.sqrt(H)
        self.input_weight = uniform_parameter((D, 3 * H), bound)
        self.recurrent_weight = uniform_parameter((H, 3 * H), bound)
        self.bias = uniform_parameter((3 * H,), bound)
        if reset_after:
            self.recurrent_bias = uniform_parameter((H,), bound)  # b_n of (3′)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, reset_after: bool = False, **options) -> int:
        """3·(H·(H + D) + H): three gates, each a (H + D) × H matrix and a bias of size H
        (+ H for b_n with ``reset_after``)."""
        D, H = input_size, hidden_size
        return 3 * (H * (H + D) + H) + (H if reset_after else 0)

    def run(self, x, h0, mask):
        x_proj = project_inputs(x, self.input_weight, self.bias)
        m = mask_array(mask, x.data)
        if self.reset_after:
            return GRUResetAfterRecurrence.apply(x_proj, self.recurrent_weight, h0, m, self.recurrent_bias)
        return GRURecurrence.apply(x_proj, self.recurrent_weight, h0, m)

    def reference_step(self, x_t, h, t):
        H = self.hidden_size
        W, U, b = self.input_weight, self.recurrent_weight, self.bias
        z = ops.sigmoid(x_t @ W[:, :H] + h @ U[:, :H] + b[:H])
        r = ops.sigmoid(x_t @ W[:, H : 2 * H] + h @ U[:, H : 2 * H] + b[H : 2 * H])
        if self.reset_after:
            n = h @ U[:, 2 * H :] + self.recurrent_bias
            h_tilde = ops.tanh(x_t @ W[:, 2 * H :] + b[2 * H :] + r * n)
        else:
            h_tilde = ops.tanh(x_t @ W[:, 2 * H :] + (r * h) @ U[:, 2 * H :] + b[2 * H :])
        h = (1 - z) * h + z * h_tilde
        return h, h

    def extra_repr(self):
        return super().extra_repr() + (", reset_after=True" if self.reset_after else "")
