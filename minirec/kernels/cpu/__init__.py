"""Numba CPU kernels: ``cpu`` implementations of the recurrence kernels, registered under the
reference names and signatures (`minirec.kernels.get_kernel` imports this package on first use
with NumPy arrays). Importing it also empties numba's cache of these kernels when _common.py has
changed since they were cached (`_common.drop_stale_cache`): numba itself would keep them."""

from minirec.kernels.cpu import lrn, matrix, minrnn, optim, qrnn, scan, sru  # noqa: F401 - importing registers the kernels
