"""SGU: scalar gated unit (Wang & Jiang 2019 §3.1), a GRU whose two gates are scalars.

    z_t = σ(w_z · [h_{t−1}, x_t] + b_z)                       (1) update gate, a scalar per example
    r_t = σ(w_r · [h_{t−1}, x_t] + b_r)                       (2) reset gate, a scalar per example
    ĥ_t = tanh(W_h [r_t · h_{t−1}, x_t] + b_h)                (3) candidate
    h_t = (1 − z_t) · h_{t−1} + z_t · ĥ_t                     (4)
    y_t = h_t

w_z, w_r are vectors of size H + D (the paper's gates have no width H: one number per example
decides how much of the whole state to keep and to reset); b_z, b_r are scalars. Biases are
included in all three, as in our GRU and MGU (CELLS.md writes SGU without them; a bias costs
3 + H·1 parameters and lets a gate start away from ½). Equation numbers are local to this docstring.

Layout. Each [h, x] product is split into a recurrent and an input part and the three blocks
are stacked as columns [z | r | h̃] of widths 1, 1, H, as (in, out) matrices like `Linear`:

* ``input_weight`` (D, H + 2) = [w_z,x | w_r,x | W_h,x], applied to the whole sequence in one
  product with autograd, outside the recurrence: x_proj = x W_x + b;
* ``recurrent_weight`` (H, H + 2) = [w_z,h | w_r,h | U_h], used inside the fused `SGURecurrence`;
* ``bias`` (H + 2,) = [b_z | b_r | b_h].
So w_z = [recurrent_weight[:, 0]; input_weight[:, 0]], and likewise w_r with column 1.

Parameter count: 2·(H + D + 1) + H·(H + D + 1) = (H + 2)(H + D + 1),
against the GRU's 3·(H·(H + D) + H) = 3H(H + D + 1): a ratio (H + 2)/(3H), about a third.
Init: every parameter U(±1/√H), as for the GRU (common practice).

Since r_t is a scalar, (r_t h_{t−1}) U_h = r_t (h_{t−1} U_h): one product s_t = h_{t−1} U per
step gives both gates and the candidate's recurrent term.

Backward (hand-derived, `minirec.kernels.sgu.sgu_backward`). With δ_t = ∂L/∂h_t (total), m_t the
mask (1 = real token), Σ_j a sum over the H features, going from t = T down to 1:
    δ_t  += m_t ȳ_t,            dh = m_t δ_t
    ∂a_h  = dh ⊙ z_t ⊙ (1 − ĥ_t²)
    ∂a_z  = Σ_j dh ⊙ (ĥ_t − h_{t−1}) · z_t(1 − z_t)
    ∂a_r  = Σ_j ∂a_h ⊙ (h_{t−1} U_h) · r_t(1 − r_t)
    ∂s_t  = [∂a_z, ∂a_r, r_t ∂a_h],      δ_{t−1} = (1 − m_t) δ_t + (1 − z_t) dh + ∂s_t Uᵀ
    ∂x_proj_t = [∂a_z, ∂a_r, ∂a_h],   ∂U = Σ_t h_{t−1}ᵀ ∂s_t,   ∂h_0 = δ_0.
Autograd carries ∂x_proj through x W_x + b. A padded step passes δ through unchanged.
"""

from __future__ import annotations

import math

from minirec.autograd import ops
from minirec.cells.base import Cell, HiddenMatrixRecurrence, mask_array, project_inputs, register
from minirec.kernels import sgu as _sgu_kernels  # noqa: F401 - registers the reference loops
from minirec.nn.layers import uniform_parameter

__all__ = ["SGU", "SGURecurrence"]


class SGURecurrence(HiddenMatrixRecurrence):
    """Fused SGU over a whole sequence: (x_proj, U, h0, mask) → (y, h_last)."""

    kernel = "sgu"


@register("sgu")
class SGU(Cell):
    """SGU layer (one direction): y_t = h_t, the state is h (B, H)."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__(input_size, hidden_size)
        D, H = self.input_size, self.hidden_size
        bound = 1 / math.sqrt(H)
        self.input_weight = uniform_parameter((D, H + 2), bound)
        self.recurrent_weight = uniform_parameter((H, H + 2), bound)
        self.bias = uniform_parameter((H + 2,), bound)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, **options) -> int:
        """(H + 2)(H + D + 1): two gate vectors of size H + D with a scalar bias each, plus the
        candidate's (H + D) × H matrix and bias of size H."""
        D, H = input_size, hidden_size
        return (H + 2) * (H + D + 1)

    def run(self, x, h0, mask):
        x_proj = project_inputs(x, self.input_weight, self.bias)
        return SGURecurrence.apply(x_proj, self.recurrent_weight, h0, mask_array(mask, x.data))

    def reference_step(self, x_t, h, t):
        W, U, b = self.input_weight, self.recurrent_weight, self.bias
        z = ops.sigmoid(x_t @ W[:, 0:1] + h @ U[:, 0:1] + b[0:1])  # (B, 1)
        r = ops.sigmoid(x_t @ W[:, 1:2] + h @ U[:, 1:2] + b[1:2])  # (B, 1)
        h_tilde = ops.tanh(x_t @ W[:, 2:] + (r * h) @ U[:, 2:] + b[2:])
        h = (1 - z) * h + z * h_tilde
        return h, h
