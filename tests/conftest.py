"""Shared fixtures: the array backends every op and cell test runs on.

``xp`` is NumPy always, and CuPy when a real GPU is usable (those cases carry the ``cuda``
marker, so `pytest -m cuda` on the GPU machine selects exactly them).
"""

import numpy as np
import pytest

from minirec import backend


def _backends():
    params = [pytest.param(np, id="numpy")]
    if backend.cuda_available():
        params.append(pytest.param(backend._cupy(), id="cupy", marks=pytest.mark.cuda))
    else:
        params.append(pytest.param(None, id="cupy", marks=[pytest.mark.cuda, pytest.mark.skip(reason="no usable GPU")]))
    return params


@pytest.fixture(params=_backends())
def xp(request):
    return request.param


@pytest.fixture(autouse=True)
def _seeded():
    backend.manual_seed(0)
    yield
    backend.set_default_dtype(np.float32)
