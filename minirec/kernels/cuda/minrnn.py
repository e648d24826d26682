"""minGRU and minLSTM (Feng et al. 2024) on the GPU: the block scan of `minirec.kernels.cuda.scan`
with the gate math inside it (the reference: minirec/kernels/minrnn.py; CPU: kernels/cpu/minrnn.py)."""

from __future__ import annotations

from minirec.kernels import minrnn as _ref
from minirec.kernels import register_kernel
from minirec.kernels.cuda._common import fast_path
from minirec.kernels.cuda.scan import MINGRU, MINLSTM, scan_backward, scan_forward, scan_log_forward


# =================================================================================================
# minGRU / minLSTM (Feng et al. 2024) and the plain linear scan: the block scan of gpu_scan with
# the gate math inside it (kernels/minrnn.py, kernels/scan.py)
# =================================================================================================
def _lanes(mode):
    return 1 if mode == "sequential" else None  # one lane: the loop over time; else a Blelloch tree


@register_kernel("mingru_forward", "cuda")
def mingru_forward(k, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.mingru_forward` on the GPU: returns (h, z)."""
    _ref.check_mode(mode)
    if not fast_path(k, x_tilde, h0):
        return _ref.mingru_forward(k, x_tilde, h0, mask, mode, g_activation)
    if mode == "log":
        return scan_log_forward(MINGRU, k, x_tilde, None, h0, mask)
    return scan_forward(MINGRU, k, x_tilde, None, h0, mask, applies_g=g_activation, lanes=_lanes(mode))


@register_kernel("mingru_backward", "cuda")
def mingru_backward(grad_h, h, h0, z, x_tilde, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.mingru_backward` on the GPU: returns (grad_k, grad_x_tilde, grad_h0)."""
    _ref.check_mode(mode)
    if not fast_path(grad_h, h, h0):
        return _ref.mingru_backward(grad_h, h, h0, z, x_tilde, mask, mode, g_activation)
    grad_k, grad_x_tilde, _, grad_h0 = scan_backward(
        MINGRU, z, x_tilde, None, None, h, h0, grad_h, mask,
        applies_g=g_activation or mode == "log", lanes=_lanes(mode))
    return grad_k, grad_x_tilde, grad_h0


@register_kernel("minlstm_forward", "cuda")
def minlstm_forward(k_f, k_i, x_tilde, h0, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.minlstm_forward` on the GPU: returns (h, f_prime)."""
    _ref.check_mode(mode)
    if not fast_path(k_f, k_i, x_tilde, h0):
        return _ref.minlstm_forward(k_f, k_i, x_tilde, h0, mask, mode, g_activation)
    if mode == "log":
        return scan_log_forward(MINLSTM, k_f, k_i, x_tilde, h0, mask)
    return scan_forward(MINLSTM, k_f, k_i, x_tilde, h0, mask, applies_g=g_activation, lanes=_lanes(mode))


@register_kernel("minlstm_backward", "cuda")
def minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask=None, mode="sequential", g_activation=False):
    """`minirec.kernels.minrnn.minlstm_backward` on the GPU: returns (grad_k_f, grad_k_i,
    grad_x_tilde, grad_h0)."""
    _ref.check_mode(mode)
    if not fast_path(grad_h, h, h0):
        return _ref.minlstm_backward(grad_h, h, h0, f_prime, k_f, k_i, x_tilde, mask, mode, g_activation)
    return scan_backward(MINLSTM, f_prime, k_f, k_i, x_tilde, h, h0, grad_h, mask,
                         applies_g=g_activation or mode == "log", lanes=_lanes(mode))
