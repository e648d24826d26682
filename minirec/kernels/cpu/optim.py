"""The Adam update fused into one pass (the ``cpu`` kernel of ``adam_update``), and the sum of
squares without the temporary array of squares (``sum_of_squares``).

Each element is read once (parameter, gradient, both moments) and written once (parameter,
moments): the reference's ten whole-array passes become one (chapter 10's exercise 5 times
both on an embedding table). The arithmetic is the reference's, operation by
operation in the arrays' dtype and without fused multiply-adds, so the results are equal bit for
bit (tested).
"""

from __future__ import annotations

import numba
import numpy as np

from minirec.kernels import optim, register_kernel
from minirec.kernels.cpu._common import FLOATS, kernel_jit, typed

__all__ = ["adam_update", "sum_of_squares"]


@kernel_jit
def _adam_pass(param, grad, m, v, lr_t, beta1, beta2, eps, weight_decay, v_hat_scale):
    # The scalars arrive as float64 and are rounded once to the arrays' dtype, as NumPy does.
    b1, b2 = typed(beta1, param), typed(beta2, param)
    c1, c2 = typed(1 - beta1, param), typed(1 - beta2, param)
    step_size, epsilon = typed(lr_t, param), typed(eps, param)
    decay, scale = typed(weight_decay, param), typed(v_hat_scale, param)
    with_decay = weight_decay != 0
    for i in range(param.size):
        g = grad[i] + decay * param[i] if with_decay else grad[i]
        m_i = m[i] * b1 + c1 * g
        v_i = v[i] * b2 + (g * g) * c2
        m[i], v[i] = m_i, v_i
        param[i] -= (m_i * step_size) / (np.sqrt(v_i * scale) + epsilon)


@register_kernel("adam_update", "cpu")
def adam_update(param, grad, m, v, *, lr, beta1, beta2, eps, weight_decay, step):
    arrays = (param, grad, m, v)
    fusable = (param.dtype.type in FLOATS and all(a.dtype == param.dtype and a.shape == param.shape
                                                  and a.flags.c_contiguous for a in arrays)
               and param.flags.writeable)
    if not fusable:  # (a view or mixed dtypes: the reference handles any layout)
        return optim.adam_update(param, grad, m, v, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                                 weight_decay=weight_decay, step=step)
    flat = [a.reshape(-1) for a in arrays]
    lr_t = lr * (1 / (1 - beta1**step))  # lr · m̂/m, computed in Python floats as the reference does
    _adam_pass(*flat, float(lr_t), float(beta1), float(beta2), float(eps), float(weight_decay),
               float(1 / (1 - beta2**step)))


# Only for this sum: "reassoc" lets LLVM split the float64 additions over SIMD lanes (a strict
# left-to-right sum is one dependent add per element, slower than NumPy's pairwise sum). The
# squares themselves stay exact float32 products; only the order of the additions changes.
_reduction_jit = numba.njit(nogil=True, cache=True, error_model="numpy", fastmath={"reassoc"})


@_reduction_jit
def _sum_of_squares(x):
    total = 0.0
    for i in range(x.size):
        square = x[i] * x[i]  # in x's dtype, as the reference squares
        total += square
    return total


@register_kernel("sum_of_squares", "cpu")
def sum_of_squares(x):
    if x.dtype.type not in FLOATS or not x.flags.c_contiguous:
        return optim.sum_of_squares(x)
    return np.float64(_sum_of_squares(x.reshape(-1)))
