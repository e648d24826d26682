"""Numba CPU kernels: ``cpu`` implementations of the recurrence kernels, registered under the
reference names and signatures (`minirec.kernels.get_kernel` imports this package on first use
with NumPy arrays)."""

from minirec.kernels.cpu import lrn, matrix, minrnn, qrnn, scan, sru  # noqa: F401 - importing registers the kernels
