"""Raw-array math shared by the autograd engine and the kernels: NumPy or CuPy arrays in, arrays
out, no Tensors. It sits below both (``autograd.ops`` and ``kernels`` import it; it imports
neither), so a kernel never reaches into the engine for a formula."""

from __future__ import annotations

__all__ = ["stable_sigmoid", "stable_softplus"]


def stable_sigmoid(xp, a):
    """σ(a) without overflow: exp is only taken of -|a|."""
    e = xp.exp(-xp.abs(a))
    return xp.where(a >= 0, 1 / (1 + e), e / (1 + e))


def stable_softplus(xp, a):
    """log(1 + e^a) = max(a, 0) + log1p(e^-|a|), exact for large |a|."""
    return xp.maximum(a, 0) + xp.log1p(xp.exp(-xp.abs(a)))
