"""The linear scan h_t = a_t h_{t−1} + b_t on the CPU (what FOFE calls through the registry).

Same signatures and results as the ``reference`` kernels registered in `minirec.kernels.scan`
(the sequential loop and its reverse scan with shifted gates): any trailing shape, flattened to
N independent columns and split across threads like the other elementwise kernels.
"""

from __future__ import annotations

import math

import numpy as np

from minirec.kernels import register_kernel, scan
from minirec.kernels.cpu._common import check_dtype, contiguous, kernel_jit, run_tiles

__all__ = ["linear_scan_forward", "linear_scan_backward"]


@kernel_jit
def _forward_tile(b0, b1, j0, j1, a, b, h0, h):
    T = a.shape[0]
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    state = h0[j0:j1].copy()
    for t in range(T):
        for j in range(lo, hi):
            state[j - lo] = a[t, j] * state[j - lo] + b[t, j]
            h[t, j] = state[j - lo]


@kernel_jit
def _backward_tile(b0, b1, j0, j1, a, h, h0, grad_h, grad_a, grad_b, grad_h0):
    T = a.shape[0]
    lo, hi = np.uint64(j0), np.uint64(j1)  # unsigned channel indices (see _common)
    carry = np.zeros(j1 - j0, a.dtype)  # a_{t+1} g_{t+1}: nothing after the last step
    for t in range(T - 1, -1, -1):
        h_prev = h[t - 1] if t > 0 else h0
        for j in range(lo, hi):
            g = grad_h[t, j] + carry[j - lo]
            grad_b[t, j] = g
            grad_a[t, j] = g * h_prev[j]
            carry[j - lo] = a[t, j] * g
    grad_h0[j0:j1] = carry


def _flat(arrays, h0):
    """Validated arrays as C-contiguous (T, N), h0 as (N,) (zeros for None), and the shape. The
    reference's own check (one shape and one dtype for all, ValueError naming the arrays) is what
    the other wrappers' `check_args` does: nothing reaches numba with a shape it would overrun."""
    *arrays, h0 = scan._validate(np, arrays, "h0", h0)
    dtype = check_dtype(arrays[0])
    shape = arrays[0].shape
    T, N = shape[0], math.prod(shape[1:])
    flat = [contiguous(x, dtype).reshape(T, N) for x in arrays]
    h0 = np.zeros(N, dtype) if h0 is None else contiguous(h0, dtype).reshape(N)
    return shape, flat, h0


@register_kernel("linear_scan_forward", "cpu")
def linear_scan_forward(a, b, h0=None):
    """h_1..h_T of h_t = a_t h_{t−1} + b_t (shape of a; h0 None means zeros)."""
    shape, (a, b), h0 = _flat({"a": a, "b": b}, h0)
    T, N = a.shape
    h = np.empty_like(a)
    run_tiles(_forward_tile, T, 1 if N else 0, N, a, b, h0, h, ns_per_element=0.5)
    return h.reshape(shape)


@register_kernel("linear_scan_backward", "cpu")
def linear_scan_backward(a, h, h0, grad_h):
    """(grad_a, grad_b, grad_h0) of the scan, given dL/dh; grad_h0 is returned even for h0 None."""
    shape, (a, h, grad_h), h0 = _flat({"a": a, "h": h, "grad_h": grad_h}, h0)
    T, N = a.shape
    grad_a, grad_b, grad_h0 = np.empty_like(a), np.empty_like(a), np.empty(N, a.dtype)
    run_tiles(_backward_tile, T, 1 if N else 0, N, a, h, h0, grad_h, grad_a, grad_b, grad_h0, ns_per_element=1.5)
    return grad_a.reshape(shape), grad_b.reshape(shape), grad_h0.reshape(shape[1:])
