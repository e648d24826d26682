"""minirec: simplified recurrent networks, derived, checked and made fast.

The top level re-exports what a reader needs first: the Tensor, the ops, `gradcheck`.
"""

from minirec import backend, nn
from minirec.autograd import (
    Function,
    GradcheckError,
    GraphFreedError,
    ShapeError,
    Tensor,
    gradcheck,
    no_grad,
    tensor,
)
from minirec.autograd.ops import (
    concat,
    cross_entropy,
    dropout,
    exp,
    gather,
    log,
    log_softmax,
    matmul,
    relu,
    sigmoid,
    softplus,
    stack,
    tanh,
    where,
)
from minirec.backend import BackendError, cuda_available, manual_seed

__version__ = "0.1.0"

__all__ = [
    "Tensor", "tensor", "Function", "no_grad", "gradcheck", "GradcheckError", "GraphFreedError",
    "ShapeError", "BackendError", "backend", "nn", "cuda_available", "manual_seed",
    "exp", "log", "tanh", "sigmoid", "relu", "softplus", "matmul", "concat", "stack", "where",
    "gather", "log_softmax", "cross_entropy", "dropout",
]
