"""Numba-CUDA implementations of the recurrence kernels (kind ``"cuda"``).

Every function here is registered under the name and signature of its ``reference`` loop
(minirec/kernels/<cell>.py: the contract) and receives and returns CuPy arrays, read and written
in place through ``__cuda_array_interface__`` (no copies). `minirec.kernels.get_kernel` imports
this module on first use with CuPy arrays. Under ``NUMBA_ENABLE_CUDASIM=1`` the same functions
take NumPy arrays and run in Numba's CUDA simulator (how the CPU test suite checks them).

Three shapes of kernel
----------------------
* **Elementwise recurrences, fused** (SRU, QRNN, LRN/gLRN/eLRN/oLRN): one thread per column
  (b, j), looping over time with the state in a register; gate math, recurrence and every
  output in one kernel, so a layer costs one launch forward and one backward. The loop runs in
  groups of four steps, software-pipelined: the next group's loads are issued before this group's
  dependent arithmetic, so loads are in flight while the state advances. In float32 the gates use a
  fast sigmoid (approximate exp and division; ``MINIREC_CUDA_FAST_SIGMOID=0``: the exact one).
  Sums over (T, B) (∂v, ∂b of SRU, ∂b of QRNN) are per-thread partial sums over time, reduced
  over the batch by one CuPy sum.
* **Linear recurrences with gates from x alone** (minGRU, minLSTM, FOFE, the linear scan): the
  block scan of `minirec.kernels.cuda.scan` with the gate math computed inside it — one launch
  forward and one backward. ``mode="sequential"`` uses one lane (the loop over time),
  ``"parallel"`` splits time into lanes joined by a Blelloch scan in shared memory, ``"log"``
  runs the log-space scan forward (its gradient is the linear one, see kernels/minrnn.py).
* **Recurrences through a matrix** (GRU, LSTM, MGU, SGU, ATR): h_{t−1} U is a CuPy (cuBLAS)
  matmul per step; everything elementwise around it is one fused kernel per step (two for GRU
  and MGU, whose reset gate sits between two products; one for the reset-after GRU). Each kernel is bound once per call
  (`_common.bind`: arrays converted once) and relaunched with the step index alone, which keeps
  the per-launch cost to the dispatcher's minimum.

Numerics: constants take the arrays' dtype (``x.dtype.type(1.0)``), so float32 kernels do no
float64 arithmetic; sigmoid and softplus are the overflow-free forms of `minirec.numerics`;
the operation order follows the reference loops, so float64 results agree to rounding.

Layout: one file per family, as in ``kernels/cpu/`` (and the reference loops in ``kernels/``):
``_common.py`` (launch plumbing, device math, the cache guard), ``scan.py`` (the block scan and
the linear scans), ``sru.py``, ``qrnn.py``, ``lrn.py``, ``minrnn.py``, ``matrix.py`` (GRU, LSTM,
MGU, SGU, ATR). Importing the package registers every kernel; the public names of the old
single-file ``kernels/cuda.py`` are re-exported here.
"""

from minirec.kernels.cuda import _common, lrn, matrix, minrnn, qrnn, scan, sru  # noqa: F401 - registers the kernels
from minirec.kernels.cuda._common import COLUMN_THREADS, SIMULATOR
from minirec.kernels.cuda.lrn import (
    elrn_backward,
    elrn_forward,
    glrn_backward,
    glrn_forward,
    lrn_backward,
    lrn_forward,
    olrn_backward,
    olrn_forward,
)
from minirec.kernels.cuda.matrix import (
    ROW_THREADS,
    atr_backward,
    atr_forward,
    gru_backward,
    gru_forward,
    gru_reset_after_backward,
    gru_reset_after_forward,
    lstm_backward,
    lstm_forward,
    mgu_backward,
    mgu_forward,
    sgu_backward,
    sgu_forward,
)
from minirec.kernels.cuda.minrnn import mingru_backward, mingru_forward, minlstm_backward, minlstm_forward
from minirec.kernels.cuda.qrnn import qrnn_backward, qrnn_forward
from minirec.kernels.cuda.scan import linear_scan_backward, linear_scan_forward
from minirec.kernels.cuda.sru import sru_backward, sru_forward

__all__ = [
    "SIMULATOR", "COLUMN_THREADS", "ROW_THREADS",
    "sru_forward", "sru_backward", "qrnn_forward", "qrnn_backward",
    "lrn_forward", "lrn_backward", "glrn_forward", "glrn_backward", "elrn_forward", "elrn_backward",
    "olrn_forward", "olrn_backward", "mingru_forward", "mingru_backward", "minlstm_forward", "minlstm_backward",
    "linear_scan_forward", "linear_scan_backward", "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
    "gru_reset_after_forward", "gru_reset_after_backward",
    "mgu_forward", "mgu_backward", "sgu_forward", "sgu_backward", "atr_forward", "atr_backward",
]
