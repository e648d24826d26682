"""The autograd engine: `Tensor`, `Function`, the primitive ops and `gradcheck`."""

from minirec.autograd import ops
from minirec.autograd.function import Context, Function, GraphFreedError, Tensor, is_grad_enabled, no_grad, tensor
from minirec.autograd.gradcheck import GradcheckError, GradcheckResult, gradcheck
from minirec.autograd.ops import ShapeError, unbroadcast

__all__ = [
    "Context", "Function", "GraphFreedError", "Tensor", "is_grad_enabled", "no_grad", "tensor",
    "GradcheckError", "GradcheckResult", "gradcheck", "ShapeError", "unbroadcast", "ops",
]
