"""What every converter shares: importing torch lazily, and moving arrays across."""

from __future__ import annotations

import numpy as np

__all__ = ["ConversionError", "require_torch", "to_numpy", "to_torch_tensor"]


class ConversionError(ValueError):
    """A model (or an option of it) that the other library cannot express."""


def require_torch():
    """torch, or an ImportError saying how to get it (minirec's core never imports torch)."""
    try:
        import torch
    except ImportError as error:
        raise ImportError("minirec.interop needs PyTorch: pip install -e '.[torch]' (or pip install torch)") from error
    return torch


def to_numpy(tensor) -> np.ndarray:
    """A torch tensor's values as a NumPy array (a copy, on the CPU)."""
    return tensor.detach().cpu().numpy().copy()


def to_torch_tensor(array, like=None):
    """A NumPy array as a torch tensor (a copy), with ``like``'s dtype and device if given."""
    torch = require_torch()
    tensor = torch.from_numpy(np.array(array, copy=True))
    return tensor if like is None else tensor.to(dtype=like.dtype, device=like.device)
