"""LRN, the lightweight recurrent network (Zhang & Sennrich, ACL 2019), and its three variants
gLRN, eLRN, oLRN. One file: they are one recurrence with different gates, and share one
kernel file (`minirec.kernels.lrn`) and one Function (a subclass per variant).

**LRN** (eqs. 1–4). Every parameter sits in one input projection, outside the recurrence:

    [q_t | k_t | v_t] = x_t W + b,   W (D, 3H), b (3H)                    (1)
    i_t = σ(k_t + h_{t−1})                                                 (2)
    f_t = σ(q_t − h_{t−1})                                                 (3)
    h_t = g(i_t ⊙ v_t + f_t ⊙ h_{t−1}),   g = tanh (default) or identity   (4)

The recurrence only re-weights tokens: with g = identity and h_0 = 0, unrolling gives

    h_t = Σ_{k≤t} i_k ⊙ (Π_{l=1}^{t−k} f_{k+l}) ⊙ v_k                       (5)

(`lrn_unrolled`), an attention-like weighted sum of the values v_k. The one-step Jacobian is
diagonal (no matrix inside the loop):

    ∂h_t/∂h_{t−1} = (σ′_i ⊙ v_t − h_{t−1} ⊙ σ′_f + f_t) ⊙ g′                (10)

with σ′_i = i_t(1 − i_t), σ′_f = f_t(1 − f_t), g′ = g′(c_t) (`lrn_step_jacobian`). The
gates react to the state itself: a large positive h_{t−1} opens i and closes f (the memory is
replaced), a large negative one does the reverse.

**gLRN** (14): f_t = σ(q_t − h_{t−1}), i_t = 1 − f_t; no W_k: [q | v], W (D, 2H).
**eLRN** (15): f_t = σ(−h_{t−1}), i_t = 1 − f_t; only [v], W (D, H): the gates use no input at all.
   Both keep eq. (4): h_t = g(i_t ⊙ v_t + f_t ⊙ h_{t−1}) with the same ``activation`` option.
**oLRN** (11–13): an output gate, i_t and f_t as in LRN, [q | k | v | w], W (D, 4H), w_t = W_o x_t:

    c_t = i_t ⊙ v_t + f_t ⊙ h_{t−1}                                         (11)
    o_t = σ(w_t − c_t)                                                      (12)
    h_t = o_t ⊙ c_t                                                         (13)

   No g is applied: eq. (13) is the whole output and o_t takes the place of the squashing
   (for a given w_t, o_t ⊙ c_t → 0 as c_t → +∞ and ≈ c_t as c_t → −∞). The carried state is
   h_t itself, exactly as (11) writes f_t ⊙ h_{t−1}; there is no separate memory cell.

Parameters: input_weight W (D, n·H) and bias b (n·H,), blocks in the order [q | k | v (| w)]
of eq. (1). Choices:
* the projection has a bias, zero-initialised, as in the official PyTorch code (CELLS.md:
  "+ bias in the official code"; a TensorFlow version of the cell has none);
* init is Glorot uniform per block, W ~ U(±√(6/(D + H))), since each block maps D to H
  features; the official code draws one xavier_uniform over the whole (D, n·H) matrix
  (bound √(6/(D + n·H))), slightly smaller.

Parameter count, n = 3 (lrn), 2 (glrn), 1 (elrn), 4 (olrn) blocks: n·H·(D + 1).

Backward (hand-written, `minirec.kernels.lrn`): d_t = ∂L/∂h_t from later steps, e_t = m_t (ȳ_t + d_t):
    ∂c = e ⊙ g′(c)  (oLRN: ∂w = e ⊙ c ⊙ σ′_o,  ∂c = e ⊙ o − ∂w)
    ∂v = ∂c ⊙ i,   ∂k = ∂c ⊙ v ⊙ σ′_i,   ∂q = ∂c ⊙ h_{t−1} ⊙ σ′_f
    (i = 1 − f: ∂q = ∂c ⊙ (h_{t−1} − v) ⊙ σ′_f;  eLRN has the same term with no q to receive it)
    d_{t−1} = (1 − m_t) d_t + ∂c ⊙ f + ∂k − ∂q      (= e ⊙ eq. (10) for LRN at a real step)
∂W and ∂b follow from ∂z = [∂q | ∂k | ∂v (| ∂w)] by autograd through the projection.
"""

from __future__ import annotations

import math

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Function
from minirec.autograd.ops import stable_sigmoid
from minirec.cells.base import Cell, mask_array, project_inputs, register
from minirec.kernels import get_kernel
from minirec.kernels import lrn as _lrn_kernels
from minirec.nn.layers import uniform_parameter

__all__ = [
    "LRN", "GLRN", "ELRN", "OLRN",
    "LRNRecurrence", "GLRNRecurrence", "ELRNRecurrence", "OLRNRecurrence",
    "lrn_unrolled", "lrn_step_jacobian",
]

ACTIVATIONS = _lrn_kernels.ACTIVATIONS


def _check_activation(activation):
    if activation not in ACTIVATIONS:
        raise ValueError(f"LRN activation must be one of {ACTIVATIONS}, got {activation!r}")


# ---- the fused Functions ------------------------------------------------------------------------
class _LRNFamilyRecurrence(Function):
    """Fused recurrence over a sequence: (z, h0, mask) → (y, h_last), z = x W + b precomputed.

    The subclass's ``variant`` names the kernels ``<variant>_forward`` / ``<variant>_backward``;
    the forward kernel returns h and the gates its backward needs, saved here as they come.
    """

    variant = "lrn"

    @staticmethod
    def forward(ctx, z, h0, mask, activation=None):
        variant = ctx.function.variant
        xp = backend.get_xp(z, h0)
        options = {} if variant == "olrn" else {"activation": activation}
        h, *gates = get_kernel(f"{variant}_forward", xp)(z, h0, mask, **options)
        y = h if mask is None else h * mask[:, :, None]
        h_last = h[-1].copy() if z.shape[0] else h0.copy()
        ctx.save_for_backward(z, h0, h, *gates)
        ctx.mask, ctx.options = mask, options
        return y, h_last

    @staticmethod
    def backward(ctx, grad_y, grad_h_last):
        z, h0, h, *gates = ctx.saved_arrays
        xp = backend.get_xp(z, h0)
        grad_z, grad_h0 = get_kernel(f"{ctx.function.variant}_backward", xp)(
            z, h0, h, *gates, ctx.mask, grad_y, grad_h_last, **ctx.options
        )
        return grad_z, grad_h0, None


class LRNRecurrence(_LRNFamilyRecurrence):
    variant = "lrn"


class GLRNRecurrence(_LRNFamilyRecurrence):
    variant = "glrn"


class ELRNRecurrence(_LRNFamilyRecurrence):
    variant = "elrn"


class OLRNRecurrence(_LRNFamilyRecurrence):
    variant = "olrn"


# ---- the cells ----------------------------------------------------------------------------------
class _LRNFamily(Cell):
    """What the four cells share: one projection z = x W + b of n blocks, the fused call."""

    variant = "lrn"
    recurrence = LRNRecurrence

    def __init__(self, input_size: int, hidden_size: int, activation: str | None = "tanh"):
        super().__init__(input_size, hidden_size)
        self.activation = activation
        D, H, n = self.input_size, self.hidden_size, self.num_blocks()
        self.input_weight = uniform_parameter((D, n * H), math.sqrt(6 / (D + H)))  # Glorot per (D, H) block
        self.bias = uniform_parameter((n * H,), 0.0)  # U(0, 0): zeros, as in the official code

    @classmethod
    def num_blocks(cls) -> int:
        return len(_lrn_kernels.BLOCKS[cls.variant])

    @classmethod
    def parameter_count(cls, input_size: int, hidden_size: int, **options) -> int:
        """n·H·(D + 1): W (D, n·H) and b (n·H), n the number of blocks of the variant."""
        return cls.num_blocks() * hidden_size * (input_size + 1)

    def _project(self, x):
        return project_inputs(x, self.input_weight, self.bias)

    def run(self, x, h0, mask):
        z = self._project(x)
        return self.recurrence.apply(z, h0, mask_array(mask, x.data), activation=self.activation)

    def prepare_reference(self, x):
        self._reference_z = self._project(x)

    def _blocks(self, t):
        """The projection at step t split into its named (B, H) blocks (Tensor ops)."""
        z_t, H = self._reference_z[t], self.hidden_size
        names = _lrn_kernels.BLOCKS[self.variant]
        return [z_t[:, j * H:(j + 1) * H] for j in range(len(names))]

    def _g(self, c):
        return ops.tanh(c) if self.activation == "tanh" else c

    def extra_repr(self):
        extra = "" if self.activation is None else f", activation={self.activation!r}"
        return f"{self.input_size}, {self.hidden_size}{extra}"


@register("lrn")
class LRN(_LRNFamily):
    """LRN (eqs. 1–4); ``activation`` g in {"tanh" (default), "identity"}."""

    variant, recurrence = "lrn", LRNRecurrence

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh"):
        _check_activation(activation)
        super().__init__(input_size, hidden_size, activation)

    def reference_step(self, x_t, h, t):
        q, k, v = self._blocks(t)
        i = ops.sigmoid(k + h)  # (2)
        f = ops.sigmoid(q - h)  # (3)
        h = self._g(i * v + f * h)  # (4)
        return h, h


@register("glrn")
class GLRN(_LRNFamily):
    """gLRN (eq. 14): coupled gates i = 1 − f, f = σ(q − h_{t−1}); ``activation`` as LRN."""

    variant, recurrence = "glrn", GLRNRecurrence

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh"):
        _check_activation(activation)
        super().__init__(input_size, hidden_size, activation)

    def reference_step(self, x_t, h, t):
        q, v = self._blocks(t)
        f = ops.sigmoid(q - h)
        i = 1 - f
        h = self._g(i * v + f * h)
        return h, h


@register("elrn")
class ELRN(_LRNFamily):
    """eLRN (eq. 15): f = σ(−h_{t−1}), i = 1 − f, gates free of the input; ``activation`` as LRN."""

    variant, recurrence = "elrn", ELRNRecurrence

    def __init__(self, input_size: int, hidden_size: int, activation: str = "tanh"):
        _check_activation(activation)
        super().__init__(input_size, hidden_size, activation)

    def reference_step(self, x_t, h, t):
        (v,) = self._blocks(t)
        f = ops.sigmoid(-h)
        i = 1 - f
        h = self._g(i * v + f * h)
        return h, h


@register("olrn")
class OLRN(_LRNFamily):
    """oLRN (eqs. 11–13): LRN's gates plus an output gate o = σ(W_o x − c); no activation g."""

    variant, recurrence = "olrn", OLRNRecurrence

    def __init__(self, input_size: int, hidden_size: int, activation: None = None):
        if activation is not None:
            raise ValueError(f"olrn takes no activation (eq. 13: h_t = o_t ⊙ c_t, no g); got {activation!r}")
        super().__init__(input_size, hidden_size, None)

    def reference_step(self, x_t, h, t):
        q, k, v, w = self._blocks(t)
        i = ops.sigmoid(k + h)
        f = ops.sigmoid(q - h)
        c = i * v + f * h  # (11)
        o = ops.sigmoid(w - c)  # (12)
        h = o * c  # (13)
        return h, h


# ---- analysis helpers (raw arrays) ----------------------------------------------------------------
def lrn_unrolled(i, f, v, return_weights: bool = False):
    """Eq. (5): h_t = Σ_{k≤t} i_k ⊙ (Π_{l=1}^{t−k} f_{k+l}) ⊙ v_k, the LRN states for g = identity,
    h_0 = 0 and no padding, given the gate and value arrays i, f, v (T, B, H) of that run.

    With ``return_weights`` also returns a (T, T, B, H), a[t, k] = i_k ⊙ Π_{l=k+1}^{t} f_l for
    k ≤ t and 0 above the diagonal: the weight token k gets in h_t (cf. self-attention).
    """
    xp = backend.get_xp(i, f, v)
    T = v.shape[0]
    a = xp.zeros((T, T) + tuple(v.shape[1:]), dtype=v.dtype)
    for t in range(T):
        decay = xp.ones(v.shape[1:], dtype=v.dtype)  # Π_{l=k+1}^{t} f_l, empty product at k = t
        for k in range(t, -1, -1):
            a[t, k] = i[k] * decay
            decay = decay * f[k]
    h = (a * v[None]).sum(axis=1)
    return (h, a) if return_weights else h


def lrn_step_jacobian(q_t, k_t, v_t, h_prev, activation: str = "tanh"):
    """Eq. (10), the diagonal of ∂h_t/∂h_{t−1} for one LRN step (raw arrays, (B, H) each):
    (σ′_i ⊙ v_t − h_{t−1} ⊙ σ′_f + f_t) ⊙ g′(c_t)."""
    _check_activation(activation)
    xp = backend.get_xp(q_t, k_t, v_t, h_prev)
    i = stable_sigmoid(xp, k_t + h_prev)
    f = stable_sigmoid(xp, q_t - h_prev)
    c = i * v_t + f * h_prev
    g_prime = 1 - xp.tanh(c) ** 2 if activation == "tanh" else xp.ones_like(c)
    return (i * (1 - i) * v_t - h_prev * f * (1 - f) + f) * g_prime
