"""QRNN: quasi-recurrent neural network (Bradbury, Merity, Xiong & Socher, ICLR 2017), window 1,
fo-pooling.

    z_t = tanh(W_z x_t + b_z),   f_t = σ(W_f x_t + b_f),   o_t = σ(W_o x_t + b_o)
    c_t = f_t ⊙ c_{t−1} + (1 − f_t) ⊙ z_t          (fo-pooling)
    h_t = o_t ⊙ c_t

With window k = 1 the paper's "convolution" is a plain projection of x_t, so every gate of every
step comes from ONE product U = x @ W done before the recurrence; what is left
(`QRNNRecurrence`) is elementwise, and the only sequential part is the linear recurrence in c.
The state is c (B, H) (``h0`` is c_0); the output is y_t = h_t.

Option ``highway`` (not in the paper; the same highway as SRU's, without its scaling):
    h_t = o_t ⊙ c_t + (1 − o_t) ⊙ s_t,   s_t = x_t, or W' x_t (no bias) when input_size ≠ hidden_size.

Layout. ``weight`` (D, k·H) in block layout [W_z | W_f | W_o] (k = 3), with a 4th block W' for
the projected highway (k = 4); ``bias`` (3H,) = [b_z | b_f | b_o] (added inside the fused
Function, so W' has none). Init: W and b ~ U(±1/√D), the default of the torch.nn.Linear that
the authors' PyTorch QRNN (salesforce/pytorch-qrnn) uses for its gates (the paper fixes no
general rule). That code chunks the projection as [Z, F, O] too (its Linear weight is our weight
transposed), but its ForgetMult computes c_t = f_t z_t + (1 − f_t) c_{t−1}: the roles of f and
1 − f are swapped relative to the paper's equation used here (negate W_f, b_f to convert).
Parameter count: k·D·H + 3H.

Padding (mask m_t ∈ {0, 1}): at a padded step c_t = c_{t−1} and h_t = 0, i.e. the pooling is
c_t = a_t c_{t−1} + u_t with a_t = m_t f_t + 1 − m_t, u_t = m_t (1 − f_t) z_t.

Backward (hand-derived, `minirec.kernels.qrnn.qrnn_backward`), ḣ_t = m_t ∂L/∂h_t:
    δ_t = ∂L/∂c_t = ḣ_t ⊙ o_t + a_t+1 ⊙ δ_t+1            (a reverse linear scan; δ_T gets ∂L/∂c_last)
    ∂L/∂c_0 = a_1 ⊙ δ_1
    g_z,t = m_t δ_t ⊙ (1 − f_t) ⊙ (1 − z_t²),   g_f,t = m_t δ_t ⊙ (c_{t−1} − z_t) ⊙ f_t (1 − f_t)
    g_o,t = ḣ_t ⊙ (c_t − s_t) ⊙ o_t (1 − o_t)   (c_t alone without highway),   ∂L/∂s_t = ḣ_t ⊙ (1 − o_t)
    ∂L/∂U = [g_z | g_f | g_o (| ∂L/∂s)],  ∂L/∂b = Σ_{t,batch} [g_z | g_f | g_o].
The gradient of W and x then follows from U = x @ W by autograd.
"""

from __future__ import annotations

import math

import numpy as np

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function
from minirec.cells.base import Cell, mask_array, register
from minirec.kernels import get_kernel
from minirec.kernels import qrnn as _qrnn_kernels  # noqa: F401 - registers the reference kernels
from minirec.nn.layers import uniform_parameter

__all__ = ["QRNN", "QRNNRecurrence"]


class QRNNRecurrence(Function):
    """Fused fo-pooling over a whole sequence: (U, b, c0, x_skip, mask) → (h, c_last).

    ``U`` (T, B, k·H) is x @ W in block layout, ``b`` (3H,) the gate biases. With
    ``highway=True`` the skip is ``x_skip`` (T, B, H), or, when ``x_skip`` is None, U's 4th block
    (read as a view; its gradient is returned as the 4th block of ∂L/∂U). ``mask`` (T, B) array
    or None. Gradients: U, b, c0, x_skip.
    """

    @staticmethod
    def forward(ctx, U, b, c0, x_skip, mask, highway=False):
        xp = backend.get_xp(U, c0)
        T, H = U.shape[0], c0.shape[1]
        skip_from_U = highway and x_skip is None
        expected = 4 * H if skip_from_U else 3 * H
        if U.shape[-1] != expected or (x_skip is not None and not highway):
            raise ValueError(
                f"QRNNRecurrence: U has {U.shape[-1]} features, expected {expected} "
                f"(H={H}, highway={highway}, x_skip given: {x_skip is not None})"
            )
        skip = U[:, :, 3 * H :] if skip_from_U else x_skip
        h, c, z, f, o = get_kernel("qrnn_forward", xp)(U, b, c0, skip, mask)
        ctx.save_for_backward(c0, skip, c, z, f, o)
        ctx.mask, ctx.skip_from_U = mask, skip_from_U
        c_last = c[T - 1] if T else c0.copy()
        return h, c_last

    @staticmethod
    def backward(ctx, grad_h, grad_c_last):
        c0, skip, c, z, f, o = ctx.saved_arrays
        xp = backend.get_xp(c, c0)
        grad_U3, grad_b, grad_skip, grad_c0 = get_kernel("qrnn_backward", xp)(
            grad_h, grad_c_last, c0, skip, c, z, f, o, ctx.mask
        )
        if ctx.skip_from_U:
            grad_U, grad_skip = xp.concatenate([grad_U3, grad_skip], axis=-1), None
        else:
            grad_U = grad_U3
        return grad_U, grad_b, grad_c0, grad_skip, None


@register("qrnn")
class QRNN(Cell):
    """QRNN layer (one direction), window 1, fo-pooling. Parameters: ``weight`` (D, k·H) =
    [W_z | W_f | W_o (| W')], ``bias`` (3H,) = [b_z | b_f | b_o]."""

    def __init__(self, input_size: int, hidden_size: int, highway: bool = False):
        super().__init__(input_size, hidden_size)
        if not isinstance(highway, (bool, np.bool_)):
            raise TypeError(f"qrnn: highway must be True or False, got {highway!r}")
        D, H = self.input_size, self.hidden_size
        self.highway = bool(highway)
        self.k = 4 if self.highway and D != H else 3
        bound = 1 / math.sqrt(D)
        self.weight = uniform_parameter((D, self.k * H), bound)
        self.bias = uniform_parameter((3 * H,), bound)

    @staticmethod
    def parameter_count(input_size: int, hidden_size: int, highway: bool = False, **options) -> int:
        """k·D·H + 3H, k = 4 with a projected highway (highway and D ≠ H), else 3."""
        D, H = input_size, hidden_size
        k = 4 if highway and D != H else 3
        return k * D * H + 3 * H

    def _project(self, x):
        """U = x @ W for every step: one (T·B, D) @ (D, k·H) product."""
        T, B, D = x.shape
        return (x.reshape(T * B, D) @ self.weight).reshape(T, B, self.k * self.hidden_size)

    def _skip(self, x):
        """The highway input handed to the Function: x, or None (U's 4th block, or no highway)."""
        return x if self.highway and self.k == 3 else None

    def run(self, x, h0, mask):
        U = self._project(x)
        return QRNNRecurrence.apply(U, self.bias, h0, self._skip(x), mask_array(mask, x.data), highway=self.highway)

    def prepare_reference(self, x):
        H = self.hidden_size
        self._ref_U = self._project(x)
        if not self.highway:
            self._ref_skip = None
        else:
            self._ref_skip = x if self.k == 3 else self._ref_U[:, :, 3 * H :]

    def reference_step(self, x_t, c, t):
        H = self.hidden_size
        gates = self._ref_U[t][:, : 3 * H] + self.bias
        z = ops.tanh(gates[:, :H])
        f = ops.sigmoid(gates[:, H : 2 * H])
        o = ops.sigmoid(gates[:, 2 * H :])
        c_new = f * c + (1 - f) * z
        h = o * c_new
        if self._ref_skip is not None:
            h = h + (1 - o) * self._ref_skip[t]
        return h, c_new

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}, highway={self.highway}"
