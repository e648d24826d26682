"""The GPU block scan moved to `minirec.kernels.cuda.scan` (the scan and the linear scans) and
`minirec.kernels.cuda._common` (launch plumbing, device math), mirroring ``kernels/cpu/``.

This name stays so that older code and notebooks keep working: ``gpu_scan.X`` reads ``X`` from
those two modules at the time of the lookup (so a value changed there is seen here).
"""

from __future__ import annotations

from minirec.kernels.cuda import _common as _common_module
from minirec.kernels.cuda import scan as _scan_module


def __getattr__(name):
    for module in (_scan_module, _common_module):
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r} (see minirec.kernels.cuda.scan)")


def __dir__():
    return sorted(set(dir(_scan_module)) | set(dir(_common_module)))
