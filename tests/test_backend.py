import numpy as np
import pytest

import minirec as mr
from minirec import backend


def test_numpy_namespace_and_scalars_ignored():
    assert backend.get_xp(np.ones(2), 3.0, None) is np
    assert backend.get_xp() is np


def test_cuda_available_never_raises_and_is_bool():
    assert isinstance(backend.cuda_available(), bool)


def test_gpu_request_without_cuda_is_a_clear_error():
    if backend.cuda_available():
        pytest.skip("a GPU is usable here")
    with pytest.raises(mr.BackendError, match="CUDA is not usable"):
        backend.to_device(np.ones(2), "gpu")


def test_unknown_device_is_named():
    with pytest.raises(ValueError, match="'tpu'"):
        backend.to_device(np.ones(2), "tpu")


def test_default_dtype_float32_and_settable():
    assert backend.get_default_dtype() == np.float32
    backend.set_default_dtype(np.float64)
    assert mr.tensor([1.0]).dtype == np.float64
    with pytest.raises(TypeError, match="floating"):
        backend.set_default_dtype(np.int32)


def test_manual_seed_makes_draws_repeatable():
    backend.manual_seed(5)
    a = backend.rng().random(3)
    backend.manual_seed(5)
    np.testing.assert_array_equal(a, backend.rng().random(3))


def test_tensor_moves_between_devices(xp):
    t = mr.tensor(np.arange(3.0), requires_grad=True).to("gpu" if xp is not np else "cpu")
    assert t.requires_grad
    assert t.to("cpu").numpy().tolist() == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("seed, error", [(-1, ValueError), (2.7, TypeError)])
def test_manual_seed_refuses_what_is_not_a_seed(seed, error):
    with pytest.raises(error):
        backend.manual_seed(seed)
