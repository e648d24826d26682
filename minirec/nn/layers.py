"""The non-recurrent layers: Linear, Embedding, Dropout, WordDropout, LayerNorm.

Weights are stored as (in_features, out_features) so a layer is ``x @ W + b`` for inputs of any
leading shape, e.g. a whole time-major sequence (T, B, D) in one product.
"""

from __future__ import annotations

import math

import numpy as np

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import Tensor
from minirec.nn.module import Module, Parameter

__all__ = ["Linear", "Embedding", "Dropout", "WordDropout", "LayerNorm", "uniform_parameter"]


def uniform_parameter(shape, bound: float, dtype=None) -> Parameter:
    """A Parameter drawn from U(−bound, bound) with minirec's seeded generator, on the CPU so
    that a seed gives the same weights whatever device the model moves to afterwards."""
    dtype = dtype or backend.get_default_dtype()
    return Parameter(backend.rng().uniform(-bound, bound, size=shape).astype(dtype))


def _check_input(name, x, expected, weight):
    if x.ndim < 1 or x.shape[-1] != expected:
        raise ValueError(f"{name}: expected input with last dimension {expected}, got shape {x.shape}")
    if x.dtype != weight.dtype:  # the product would upcast, and the weight's gradient with it
        raise TypeError(f"{name}: input has dtype {x.dtype} but the weights are {weight.dtype}; create the "
                        "layer under the same default dtype (minirec.backend.set_default_dtype)")


class Linear(Module):
    """y = x @ W + b, W of shape (in_features, out_features); init U(±1/√in_features)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features)
        self.weight = uniform_parameter((in_features, out_features), bound, dtype)
        self.bias = uniform_parameter((out_features,), bound, dtype) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        _check_input("Linear", x, self.in_features, self.weight)
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """Rows of a (num_embeddings, dim) table; init U(±0.1) (Zaremba et al. 2014)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_range: float = 0.1, dtype=None):
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = uniform_parameter((num_embeddings, embedding_dim), init_range, dtype)

    def forward(self, indices) -> Tensor:
        return ops.gather(self.weight, indices)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"


class Dropout(Module):
    """Inverted dropout while training; the identity in eval mode."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return ops.dropout(x, self.p, training=self.training)

    def extra_repr(self):
        return f"p={self.p}"


class WordDropout(Module):
    """Drop whole word vectors while training: each position of a (..., E) input is zeroed with
    probability p, all E features together, and the kept ones scaled by 1/(1 − p); the identity
    in eval mode. On small classification sets it keeps a model from leaning on a few memorised
    words (Iyyer et al. 2015 drop words; Gal & Ghahramani 2016 drop embedding rows)."""

    def __init__(self, p: float = 0.0):
        if not 0 <= p < 1:
            raise ValueError(f"word dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return ops.dropout(x, self.p, training=self.training, noise_shape=(*x.shape[:-1], 1))

    def extra_repr(self):
        return f"p={self.p}"


class LayerNorm(Module):
    """(x − mean) / √(var + eps) · γ + β over the last axis (Ba et al. 2016)."""

    def __init__(self, normalized_size: int, eps: float = 1e-5, dtype=None):
        dtype = dtype or backend.get_default_dtype()
        self.normalized_size, self.eps = normalized_size, eps
        self.gamma = Parameter(np.ones(normalized_size, dtype=dtype))
        self.beta = Parameter(np.zeros(normalized_size, dtype=dtype))

    def forward(self, x: Tensor) -> Tensor:
        _check_input("LayerNorm", x, self.normalized_size, self.gamma)
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred * centred).mean(axis=-1, keepdims=True)
        return centred / (variance + self.eps) ** 0.5 * self.gamma + self.beta

    def extra_repr(self):
        return f"{self.normalized_size}, eps={self.eps}"
