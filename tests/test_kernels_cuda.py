"""The Numba-CUDA kernels (minirec/kernels/cuda/) held to the reference loops.

Three layers:

* **Simulator** (`test_simulator_suite`, always run): the same file is run again by pytest in a
  subprocess with ``NUMBA_ENABLE_CUDASIM=1`` (the simulator must be chosen before numba.cuda is
  first imported, so it cannot share this process). There, the ``test_sim_*`` tests compare every
  kernel's forward and backward with the reference, in float64 and float32, with and without a
  mask, at tiny odd sizes (T = 1, T = 7, B = 1, H = 3) and with launch shapes shrunk so that
  several blocks, idle threads, several time lanes and empty lanes all occur.
* **Real CUDA** (``@pytest.mark.cuda``, skipped without a GPU): the same comparisons on CuPy
  arrays at realistic sizes.
* **Plain process**: the module imports without a GPU and registers every kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from minirec import backend

INNER = os.environ.get("MINIREC_CUDASIM_INNER") == "1"


# ---- the cases: inputs for a forward kernel, and for its backward from the forward's outputs --------
def _r(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def _mask(rng, T, B, dtype, masked):
    if not masked:
        return None
    m = (rng.random((T, B)) > 0.35).astype(dtype)
    m[-1, 0] = 0  # at least one padded step
    return m


def _sru(drop=False, skip_in_U=False):
    def build(rng, T, B, H, dtype, masked):
        U = _r(rng, (T, B, (4 if skip_in_U else 3) * H), dtype)
        x_skip = U[:, :, 3 * H:] if skip_in_U else _r(rng, (T, B, H), dtype)
        d = ((rng.random((B, H)) > 0.3) / 0.7).astype(dtype) if drop else None
        args = (U, x_skip, _r(rng, H, dtype, 0.7), _r(rng, H, dtype, 0.7), _r(rng, H, dtype), _r(rng, H, dtype),
                _r(rng, (B, H), dtype), _mask(rng, T, B, dtype, masked), d, 3 ** 0.5)

        def backward(out):
            h, c, f, r = out
            U, x_skip, v_f, v_r, _, _, c0, mask, d, alpha = args
            return (_r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype), U, x_skip, v_f, v_r, c0, c, f, r, mask, d,
                    alpha)
        return args, backward
    return build


def _qrnn(skip):
    def build(rng, T, B, H, dtype, masked):
        args = (_r(rng, (T, B, 3 * H), dtype), _r(rng, 3 * H, dtype), _r(rng, (B, H), dtype),
                _r(rng, (T, B, H), dtype) if skip else None, _mask(rng, T, B, dtype, masked))

        def backward(out):
            h, c, z, f, o = out
            _, _, c0, x_skip, mask = args
            return (_r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype), c0, x_skip, c, z, f, o, mask)
        return args, backward
    return build


_LRN_BLOCKS = {"lrn": 3, "glrn": 2, "elrn": 1, "olrn": 4}


def _lrn(variant, activation="tanh"):
    def build(rng, T, B, H, dtype, masked):
        z = _r(rng, (T, B, _LRN_BLOCKS[variant] * H), dtype)
        h0 = _r(rng, (B, H), dtype, 0.5)
        mask = _mask(rng, T, B, dtype, masked)
        args = (z, h0, mask) if variant == "olrn" else (z, h0, mask, activation)

        def backward(out):
            grads = (_r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype))
            tail = () if variant == "olrn" else (activation,)
            return (z, h0, *out, mask, *grads, *tail)
        return args, backward
    return build


def _mingru(mode, g_activation=False):
    def build(rng, T, B, H, dtype, masked):
        u = _r(rng, (T, B, 2 * H), dtype, 1.5)
        k, x_tilde = u[..., :H], u[..., H:]  # strided views, as the cell passes them
        h0 = rng.uniform(0.2, 1.0, (B, H)).astype(dtype)  # > 0: the log mode needs it
        mask = _mask(rng, T, B, dtype, masked)
        args = (k, x_tilde, h0, mask, mode, g_activation)

        def backward(out):
            h, z = out
            return (_r(rng, (T, B, H), dtype), h, h0, z, x_tilde, mask, mode, g_activation)
        return args, backward
    return build


def _minlstm(mode, g_activation=False):
    def build(rng, T, B, H, dtype, masked):
        u = _r(rng, (T, B, 3 * H), dtype, 1.5)
        k_f, k_i, x_tilde = u[..., :H], u[..., H:2 * H], u[..., 2 * H:]
        h0 = rng.uniform(0.2, 1.0, (B, H)).astype(dtype)
        mask = _mask(rng, T, B, dtype, masked)
        args = (k_f, k_i, x_tilde, h0, mask, mode, g_activation)

        def backward(out):
            h, f_prime = out
            return (_r(rng, (T, B, H), dtype), h, h0, f_prime, k_f, k_i, x_tilde, mask, mode, g_activation)
        return args, backward
    return build


def _matrix_cell(name, width):
    """gru, mgu, sgu: (x_proj, U, h0, mask) → (h, gates); backward (U, h0, mask, h, gates, ḡy, ḡh)."""
    def build(rng, T, B, H, dtype, masked):
        W = width(H)
        args = (_r(rng, (T, B, W), dtype), _r(rng, (H, W), dtype, H ** -0.5), _r(rng, (B, H), dtype, 0.5),
                _mask(rng, T, B, dtype, masked))

        def backward(out):
            h, gates = out
            _, U, h0, mask = args
            return (U, h0, mask, h, gates, _r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype))
        return args, backward
    return build


def _gru_reset_after(rng, T, B, H, dtype, masked):
    args = (_r(rng, (T, B, 3 * H), dtype), _r(rng, (H, 3 * H), dtype, H ** -0.5), _r(rng, H, dtype, 0.5),
            _r(rng, (B, H), dtype, 0.5), _mask(rng, T, B, dtype, masked))

    def backward(out):
        h, gates = out
        _, U, _, h0, mask = args
        return (U, h0, mask, h, gates, _r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype))
    return args, backward


def _lstm(rng, T, B, H, dtype, masked):
    args = (_r(rng, (T, B, 4 * H), dtype), _r(rng, (H, 4 * H), dtype, H ** -0.5), _r(rng, (B, H), dtype, 0.5),
            _r(rng, (B, H), dtype, 0.5), _mask(rng, T, B, dtype, masked))

    def backward(out):
        h, c, gates = out
        _, U, h0, c0, mask = args
        return (U, h0, c0, mask, h, c, gates, _r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype),
                _r(rng, (B, H), dtype))
    return args, backward


def _atr(rng, T, B, H, dtype, masked):
    args = (_r(rng, (T, B, H), dtype), _r(rng, (H, H), dtype, H ** -0.5), _r(rng, H, dtype, 0.5),
            _r(rng, (B, H), dtype, 0.5), _mask(rng, T, B, dtype, masked))

    def backward(out):
        h, i, f = out
        p, U, _, h0, mask = args
        return (p, U, h0, h, i, f, mask, _r(rng, (T, B, H), dtype), _r(rng, (B, H), dtype))
    return args, backward


# name: (kernel prefix, builder)
CASES = {
    "sru": ("sru", _sru()),
    "sru-drop": ("sru", _sru(drop=True)),
    "sru-skip-in-U": ("sru", _sru(skip_in_U=True)),
    "qrnn": ("qrnn", _qrnn(False)),
    "qrnn-highway": ("qrnn", _qrnn(True)),
    "lrn-tanh": ("lrn", _lrn("lrn")),
    "lrn-identity": ("lrn", _lrn("lrn", "identity")),
    "glrn-tanh": ("glrn", _lrn("glrn")),
    "glrn-identity": ("glrn", _lrn("glrn", "identity")),
    "elrn-tanh": ("elrn", _lrn("elrn")),
    "elrn-identity": ("elrn", _lrn("elrn", "identity")),
    "olrn": ("olrn", _lrn("olrn")),
    "mingru-sequential": ("mingru", _mingru("sequential")),
    "mingru-sequential-g": ("mingru", _mingru("sequential", True)),
    "mingru-parallel": ("mingru", _mingru("parallel")),
    "mingru-parallel-g": ("mingru", _mingru("parallel", True)),
    "mingru-log": ("mingru", _mingru("log", True)),
    "minlstm-sequential": ("minlstm", _minlstm("sequential")),
    "minlstm-sequential-g": ("minlstm", _minlstm("sequential", True)),
    "minlstm-parallel": ("minlstm", _minlstm("parallel")),
    "minlstm-parallel-g": ("minlstm", _minlstm("parallel", True)),
    "minlstm-log": ("minlstm", _minlstm("log", True)),
    "gru": ("gru", _matrix_cell("gru", lambda H: 3 * H)),
    "gru-reset-after": ("gru_reset_after", _gru_reset_after),
    "mgu": ("mgu", _matrix_cell("mgu", lambda H: 2 * H)),
    "sgu": ("sgu", _matrix_cell("sgu", lambda H: H + 2)),
    "lstm": ("lstm", _lstm),
    "atr": ("atr", _atr),
}


def _tolerances(dtype, long=False):
    """(rtol, atol relative to the largest |value|). float32 results of long sequences differ from
    the float32 reference by rounding amplified along the sequence (both are ~1e-4 from float64
    there), so the GPU-size tests allow more; float64 is the strict check."""
    if np.dtype(dtype) == np.float64:
        return 1e-10, 1e-12
    return (1e-3, 3e-4) if long else (3e-4, 3e-5)


def _compare(actual, expected, dtype, what, to_numpy=np.asarray, long=False):
    actual = actual if isinstance(actual, tuple) else (actual,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, reference has {len(expected)}"
    rtol, atol = _tolerances(dtype, long)
    for n, (a, e) in enumerate(zip(actual, expected)):
        if e is None:
            assert a is None, f"{what}: output {n} should be None"
            continue
        a, e = to_numpy(a), np.asarray(e)
        assert a.shape == e.shape, f"{what}: output {n} has shape {a.shape}, reference {e.shape}"
        assert a.dtype == e.dtype, f"{what}: output {n} has dtype {a.dtype}, reference {e.dtype}"
        scale = max(1.0, float(np.abs(e).max())) if e.size else 1.0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale, err_msg=f"{what}: output {n}")


def _impls(prefix):
    from minirec.kernels import _KERNELS, cuda  # noqa: F401  (importing cuda registers it)

    return tuple(_KERNELS[f"{prefix}_{part}"] for part in ("forward", "backward"))


def _check_case(case, T, B, H, dtype, masked, seed=0, device=None):
    """Forward and backward of one case against the reference (on NumPy inputs). ``device``:
    a function moving an array to the GPU (CuPy), or None to call the kernels on NumPy."""
    prefix, build = CASES[case]
    forward, backward = _impls(prefix)
    rng = np.random.default_rng(seed)
    args, make_backward_args = build(rng, T, B, H, dtype, masked)
    move = (lambda a: device(a) if isinstance(a, np.ndarray) else a) if device else (lambda a: a)
    to_numpy, long = backend.to_numpy, T > 16
    expected = forward["reference"](*args)
    _compare(forward["cuda"](*[move(a) for a in args]), expected, dtype, f"{case} forward", to_numpy, long)
    bargs = make_backward_args(expected)  # the backward of both is fed the reference forward's outputs
    expected_grads = backward["reference"](*bargs)
    _compare(backward["cuda"](*[move(a) for a in bargs]), expected_grads, dtype, f"{case} backward", to_numpy, long)


def as_column_view(xp):
    """A mover that puts an array inside a wider parent and returns the view (a gap before and after
    along the last axis): the non-contiguous, offset views the cells pass (u[..., :H] of a
    projection), which contiguous copies would never exercise."""
    def move(a):
        if a.ndim == 0:
            return xp.asarray(a)
        parent = xp.zeros(a.shape[:-1] + (a.shape[-1] + 3,), dtype=a.dtype)
        parent[..., 1:1 + a.shape[-1]] = xp.asarray(a)
        return parent[..., 1:1 + a.shape[-1]]
    return move


FAST_SIGMOID_RTOL = 1e-5  # float32 fast sigmoid against the exact one, |x| ≤ 40 (kernels/cuda/_common.py)


def _fast_sigmoid_values(x):
    """`_common.fast_sigmoid` of the float32 array ``x``, run as a kernel (GPU or simulator)."""
    from numba import cuda as numba_cuda

    from minirec.kernels.cuda import _common

    @numba_cuda.jit
    def kernel(x, y):
        active, _, i = _common.column_of(1, x.shape[0])
        if active:
            y[i] = _common.fast_sigmoid(x[i], x.dtype.type(1.0))

    y = x.copy()
    _common.launch(kernel, -(-x.size // 64), 64, x, y)
    return y


def _check_fast_sigmoid(to_numpy, xp):
    from minirec.numerics import stable_sigmoid

    x = np.linspace(-40, 40, 4001, dtype=np.float32)
    exact = stable_sigmoid(np, x.astype(np.float64))
    fast = to_numpy(_fast_sigmoid_values(xp.asarray(x)))
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, exact, rtol=FAST_SIGMOID_RTOL, atol=0)
    return fast, exact


# ---- the plain process: import, registration, the simulator subprocess ------------------------------
if not INNER:

    def test_module_imports_without_gpu_and_registers_every_kernel():
        from minirec.kernels import cuda, gpu_scan, kernel_names  # noqa: F401

        names = kernel_names()
        for prefix, _ in CASES.values():
            for part in ("forward", "backward"):
                assert "cuda" in names[f"{prefix}_{part}"], f"{prefix}_{part} has no cuda kernel"
                assert "reference" in names[f"{prefix}_{part}"]

    def test_corner_cases_fall_back_to_the_reference():
        """T = 0 (and non-float dtypes) never reach a kernel: the wrappers hand them to the
        reference loop, so this runs without a GPU or simulator."""
        from minirec.kernels import cuda

        x = np.zeros((0, 2, 9), np.float64)
        h, c, f, r = cuda.sru_forward(x, x[:, :, :3], *(np.zeros(3),) * 4, np.zeros((2, 3)), None, None, 1.0)
        assert h.shape == (0, 2, 3) and c.shape == (0, 2, 3)
        h, gates = cuda.gru_forward(x, np.zeros((3, 9)), np.zeros((2, 3)), None)
        assert h.shape == (0, 2, 3) and gates.shape == (0, 2, 9)

    def test_simulator_suite():
        """Run this file's ``test_sim_*`` tests under NUMBA_ENABLE_CUDASIM=1 in a subprocess."""
        env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", MINIREC_CUDASIM_INNER="1")
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
             os.path.abspath(__file__)],
            env=env, cwd=root, capture_output=True, text=True, timeout=900,
        )
        elapsed = time.perf_counter() - start
        report = proc.stdout[-6000:] + proc.stderr[-3000:]
        assert proc.returncode == 0, f"simulator suite failed ({elapsed:.0f} s):\n{report}"
        assert " passed" in proc.stdout, report
        print(f"simulator suite: {proc.stdout.strip().splitlines()[-1]} ({elapsed:.1f} s)")

    def test_column_blocks_of_one_projection_share_their_parent():
        from minirec.kernels.cuda._common import column_blocks

        u = np.arange(4 * 2 * 7, dtype=np.float64).reshape(4, 2, 7)  # base: a 1-D array, reshaped once
        k, x_tilde, other = u[..., :3], u[..., 3:], np.zeros((4, 2, 3))
        (pk, px, po, none), offsets = column_blocks(k, x_tilde, other, None)
        assert pk is px and pk.shape == (4, 2, 7) and offsets == (0, 3, 0, 0)
        assert po is other and none is None
        np.testing.assert_array_equal(px[..., 3:], x_tilde)
        strided = u[:, :, ::2]  # not a block of columns: read as it is
        (p, q), offsets = column_blocks(strided, x_tilde)
        assert p is strided and q.shape == (4, 2, 7) and np.shares_memory(q, u) and offsets == (0, 3)
        (q,), offsets = column_blocks(x_tilde)
        assert q is x_tilde and offsets == (0,)  # a block alone: no conversion to save

    def test_host_cost_benchmark_counts_launches_per_call():
        """benchmarks/gpu_host.py (the launch and conversion counts of benchmarks/README.md) runs in
        the simulator and refuses to run outside it."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        script = os.path.join(root, "benchmarks", "gpu_host.py")
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NUMBA_ENABLE_CUDASIM")}
        refused = subprocess.run([sys.executable, script], env=env, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "NUMBA_ENABLE_CUDASIM=1" in refused.stderr
        done = subprocess.run([sys.executable, script, "--repeats", "1", "--calls", "1"],
                              env={**env, "NUMBA_ENABLE_CUDASIM": "1"}, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        rows = {" ".join(line.split()[:-4]): line.split()[-4:] for line in done.stdout.splitlines()[3:-1]}
        assert rows["lstm forward"][:2] == ["64", "7"]  # T launches; x_proj, s, h0, c0 (mask stand-in), h, c, gates
        assert rows["gru forward"][0] == "128" and rows["gru_reset_after forward"][0] == "64"
        assert rows["sru forward"][:2] == ["1", "8"]

    def test_no_block_exceeds_what_a_gpu_can_launch():
        """A block of more than 256 threads at 40-100 registers each exceeds an SM's register file:
        it launches in the simulator and fails on a GPU, so no plan may produce one."""
        from minirec.kernels.cuda import _common, matrix, scan

        limit = _common.MAX_BLOCK_THREADS
        assert limit * 255 <= 65536  # launchable at any register count
        with pytest.raises(ValueError, match="would not launch"):
            scan.plan(100, 10, lanes=2 * limit)
        for T in (1, 9, 100, 5000):
            for columns in (1, 7, 300, 10 ** 6):
                for lanes in (None, 1, 2, limit):
                    _, (channels, lanes_used), _ = scan.plan(T, columns, lanes)
                    assert channels * lanes_used <= limit
            assert _common.column_grid(T * 1000)[1] <= limit
        assert matrix._row_threads(10 ** 6) <= limit

    def test_grid_size_warnings_of_both_numba_cuda_classes_are_silenced():
        import importlib.util
        import warnings

        from minirec.kernels.cuda import _common

        classes = _common._performance_warning_classes()
        if importlib.util.find_spec("numba_cuda") is not None:
            assert len(classes) == 2, "numba-cuda's own NumbaPerformanceWarning is not filtered"
        for category in classes:
            with warnings.catch_warnings(record=True) as caught:  # (pytest restores the filters after each test)
                _common.silence_grid_size_warnings()
                warnings.warn("Grid size 1 will likely result in GPU under-utilization", category, stacklevel=1)
                warnings.warn("something else", category, stacklevel=1)
            assert [str(w.message) for w in caught] == ["something else"], category

    # ---- the preflight: what `minirec info` and cuda_available() report ----------------------------
    def _fake(ok, detail):
        return lambda: (ok, detail)

    def test_preflight_stops_at_the_first_failure_and_names_it(monkeypatch):
        from minirec.kernels import preflight

        ran = []

        def later():
            ran.append("later")
            return True, "never reached"

        monkeypatch.setattr(preflight, "CHECKS", (("numpy", _fake(True, "2.4")), ("NVRTC", _fake(False, "no nvrtc")),
                                                  ("launch", later)))
        checks = preflight.cuda_checks(refresh=True)
        try:
            assert [c.name for c in checks] == ["numpy", "NVRTC"] and not ran
            assert not preflight.cuda_ready() and not backend.cuda_available()
            assert "FAIL NVRTC: no nvrtc" in preflight.describe()
        finally:
            preflight.cuda_checks(refresh=True)  # forget the faked result

    def test_preflight_passes_only_when_every_check_does_and_never_raises(monkeypatch):
        from minirec.kernels import preflight

        def broken():
            raise OSError("libcuda.so: cannot open shared object file")

        try:
            monkeypatch.setattr(preflight, "CHECKS", tuple((n, _fake(True, "fine")) for n, _ in preflight.CHECKS))
            assert preflight.cuda_checks(refresh=True) and preflight.cuda_ready()
            monkeypatch.setattr(preflight, "CHECKS", (("driver", broken), ("launch", _fake(True, ""))))
            (check,) = preflight.cuda_checks(refresh=True)
            assert not check.ok and "OSError: libcuda.so" in check.detail
            assert not preflight.cuda_ready()
        finally:
            monkeypatch.undo()
            preflight.cuda_checks(refresh=True)

    def test_preflight_names_numpy_25_numba_cuda_and_nvvm(monkeypatch):
        import importlib.metadata

        from minirec.kernels import preflight

        monkeypatch.setattr(np, "__version__", "2.5.0")
        ok, detail = preflight._check_numpy()
        assert not ok and "numpy < 2.5" in detail
        monkeypatch.setattr(np, "__version__", "2.4.6")
        assert preflight._check_numpy() == (True, "2.4.6")

        def version(name, found=None):
            if found is None:
                raise importlib.metadata.PackageNotFoundError(name)
            return found

        monkeypatch.setattr(importlib.metadata, "version", version)
        ok, detail = preflight._check_numba_cuda()
        assert not ok and "numba-cuda is not installed" in detail and "cuda13" in detail
        monkeypatch.setattr(importlib.metadata, "version", lambda name: "0.4.0")
        ok, detail = preflight._check_numba_cuda()
        assert not ok and "too old" in detail

        from numba.cuda.cudadrv import nvvm

        def missing():
            raise OSError("libnvvm.so not found")

        monkeypatch.setattr(nvvm, "NVVM", missing)
        ok, detail = preflight._check_nvvm()
        assert not ok and "libNVVM not found" in detail and "libnvvm.so" in detail

    def test_preflight_nvrtc_check_across_numba_cuda_versions(monkeypatch):
        from numba.cuda.cudadrv import nvrtc

        from minirec.kernels import preflight

        def missing():
            raise OSError('Failure finding "libnvrtc.so.13 or libnvrtc.so.12"')

        monkeypatch.setattr(nvrtc, "_get_nvrtc_version", missing, raising=False)
        ok, detail = preflight._check_nvrtc()
        assert not ok and "NVRTC not found" in detail and "libnvrtc.so.13" in detail
        monkeypatch.setattr(nvrtc, "_get_nvrtc_version", lambda: (13, 1), raising=False)
        assert preflight._check_nvrtc() == (True, "13.1")
        monkeypatch.delattr(nvrtc, "_get_nvrtc_version")
        monkeypatch.delattr(nvrtc, "NVRTC", raising=False)
        ok, detail = preflight._check_nvrtc()  # a numba-cuda that cannot say: the launch check decides
        assert ok and "not queried" in detail

    @pytest.mark.skipif(backend._cupy() is not None, reason="CuPy is installed here")
    def test_info_says_cupy_is_missing():
        from minirec import info

        lines = info.collect()["cuda_checks"]
        assert lines[-1].startswith("FAIL cupy: CuPy is not installed") and "'.[cuda12]'" in lines[-1]

    # ---- compiled for a real GPU (sm_90 PTX), without one ------------------------------------------
    # The simulator runs the kernels as Python, so it cannot see what Numba's CUDA compiler would
    # reject (an unsupported builtin, a float64 constant leaking into float32 code, a per-thread
    # array). Where libNVVM is installed (CUDA toolkit) the kernels are compiled to PTX for sm_90
    # here: every launch of a workload compiles its kernel for the argument types instead of
    # running it. The default set is a representative few in float32; MINIREC_SLOW=1 does all,
    # in both precisions.
    _PTX_DEFAULT = ["sru", "minlstm-log", "sgu"]  # fused columns; all three scans; shared-memory reduction

    @pytest.fixture
    def ptx_compiler(monkeypatch):
        if backend.cuda_available():
            pytest.skip("a real GPU is present: the cuda-marked tests run the kernels")
        from minirec.kernels import gpu_scan

        if gpu_scan.SIMULATOR:
            pytest.skip("NUMBA_ENABLE_CUDASIM is set: no compiler in this process")
        from numba import cuda as numba_cuda

        try:
            from numba.cuda import compiler as cuda_compiler
            from numba.cuda import dispatcher as cuda_dispatcher
            from numba.cuda.cudadrv import nvvm

            nvvm.NVVM()
        except Exception as error:  # no CUDA toolkit, or a numba-cuda without these internals
            pytest.skip(f"libNVVM unavailable: {type(error).__name__}: {error}")
        try:  # numba-cuda also needs NVRTC to compile (numba's built-in numba.cuda does not)
            import numba

            numba_cuda.compile_ptx(lambda x: None, (numba.float32[:],), cc=(9, 0))
        except Exception as error:
            pytest.skip(f"cannot compile for sm_90 here (NVRTC?): {type(error).__name__}: {error}")
        from minirec.kernels import cuda

        class _Device:  # the device functions compile for the "current device": say it is an H100
            compute_capability = (9, 0)

        for module in (cuda_compiler, cuda_dispatcher):
            monkeypatch.setattr(module, "get_current_device", lambda: _Device(), raising=True)
        compiled = {}

        def configure(kernel, grid, block):
            def compile_for(*args):
                import numba

                signature = tuple(numba.typeof(a) for a in args)
                constants = tuple(cell.cell_contents for cell in kernel.py_func.__closure__ or ())  # a variant's flags
                key = (kernel.py_func.__name__, constants, signature)
                if key not in compiled:
                    ptx, _ = numba_cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))
                    single = any(getattr(a, "dtype", None) == np.float32 for a in args)
                    body = ptx.split(".entry", 1)[1]
                    compiled[key] = (single, body)
            return compile_for

        monkeypatch.setattr(cuda._common, "configure", configure)  # every launch goes through _common.bind
        monkeypatch.setattr(cuda._common, "device_args", lambda *args: args)
        return compiled

    def _ptx_cases():
        if os.environ.get("MINIREC_SLOW") == "1":
            return [(c, d) for d in (np.float32, np.float64) for c in CASES]
        return [(c, np.float32) for c in _PTX_DEFAULT]

    def test_kernels_compile_for_sm90(ptx_compiler):
        import warnings

        for case, dtype in _ptx_cases():
            prefix, build = CASES[case]
            forward, backward = _impls(prefix)
            for masked in (False, True) if os.environ.get("MINIREC_SLOW") == "1" else (True,):
                args, make_backward_args = build(np.random.default_rng(0), 5, 2, 3, dtype, masked)
                with warnings.catch_warnings():  # nothing runs: the outputs are uninitialised
                    warnings.simplefilter("ignore", RuntimeWarning)
                    forward["cuda"](*args)
                    backward["cuda"](*make_backward_args(forward["reference"](*args)))
        assert ptx_compiler, "no kernel was launched"
        for (name, _, signature), (single, body) in ptx_compiler.items():
            assert "__local_depot" not in body, f"{name} {signature} uses local memory"
            if single:
                # one float64 kernel argument (SRU's alpha) may be converted once; no more
                assert body.count(".f64") <= 4, f"{name} {signature} does float64 arithmetic"

    def test_scan_variants_compile_out_the_branches_they_cannot_take(ptx_compiler):
        """The flags are compile-time constants: the plain scan without mask has none of minLSTM's
        exp/log (σ, softplus) in its machine code, and is a fraction of its size."""
        import numba
        from numba import cuda as numba_cuda

        from minirec.kernels.cuda import scan

        f3, f2 = numba.float32[:, :, :], numba.float32[:, :]
        signature = (f3, f3, f3, numba.types.UniTuple(numba.int64, 3), f2, f2, numba.int64, f3, f3)

        def ptx(*flags):
            text, _ = numba_cuda.compile_ptx(scan.forward_kernel(*flags).py_func, signature, cc=(9, 0))
            return text.split(".entry", 1)[1]

        plain = ptx(scan.PLAIN, False, False, False, False)
        minlstm = ptx(scan.MINLSTM, True, True, True, True)
        assert "ex2.approx" not in plain and "ex2.approx" in minlstm
        assert plain.count("\n") < minlstm.count("\n") / 2

    def test_fast_sigmoid_compiles_to_the_approximate_instructions(ptx_compiler):
        """float32 SRU and LRN forwards divide with div.approx (the fast sigmoid) by default and with
        the IEEE div.rn when MINIREC_CUDA_FAST_SIGMOID=0; float64 never takes the fast path."""
        import numba
        from numba import cuda as numba_cuda

        from minirec.kernels.cuda import _common, lrn, sru

        f3, f2, f1 = numba.float32[:, :, :], numba.float32[:, :], numba.float32[:]
        sru_signature = (f3, f3, f1, f1, f1, f1, f2, f2, f2, numba.float64, numba.float32[:, :, :, :])
        i64 = numba.int64
        lrn_signature = (f3, f2, f2, i64, i64, i64, i64, numba.float32[:, :, :, :])

        def ptx(kernel, signature):
            return numba_cuda.compile_ptx(kernel.py_func, signature, cc=(9, 0))[0].split(".entry", 1)[1]

        for fast in (True, False):
            for body in (ptx(sru.forward_kernel(True, False, fast), sru_signature),
                         ptx(lrn.forward_kernel(True, True, False, True, True, fast), lrn_signature)):
                assert ("div.approx.f32" in body) == fast
                assert ("div.rn.f32" in body) != fast
        assert _common.fast_sigmoid_for(np.float32) and not _common.fast_sigmoid_for(np.float64)

    # ---- real CUDA, CuPy arrays, realistic sizes -------------------------------------------------
    gpu = pytest.mark.skipif(not backend.cuda_available(), reason="no usable GPU (CuPy + CUDA)")

    @pytest.mark.cuda
    @gpu
    @pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
    @pytest.mark.parametrize("dtype", [np.float64, np.float32])
    @pytest.mark.parametrize("case", list(CASES))
    def test_cuda_kernel_matches_reference(case, dtype, masked):
        cp = backend._cupy()
        T, B, H = (37, 6, 70) if case in ("gru", "gru-reset-after", "mgu", "sgu", "lstm", "atr") else (301, 16, 200)
        _check_case(case, T, B, H, dtype, masked, device=cp.asarray)

    @pytest.mark.cuda
    @gpu
    @pytest.mark.parametrize("T", [1, 31, 1000])
    def test_cuda_linear_scans_match_reference(T):
        from minirec.kernels import gpu_scan, scan

        cp = backend._cupy()
        rng = np.random.default_rng(T)
        a = rng.uniform(0.5, 1.0, (T, 8, 130))
        b = rng.standard_normal((T, 8, 130))
        h0 = rng.uniform(0.5, 1.0, (8, 130))
        g = rng.standard_normal((T, 8, 130))
        ref = scan.linear_scan_sequential(a, b, h0)
        for lanes in (None, 1, 32):
            h = gpu_scan.linear_scan_cuda(cp.asarray(a), cp.asarray(b), cp.asarray(h0), lanes=lanes)
            np.testing.assert_allclose(h.get(), ref, rtol=1e-10, atol=1e-12)
            grads = gpu_scan.linear_scan_backward_cuda(cp.asarray(a), cp.asarray(ref), cp.asarray(h0),
                                                       cp.asarray(g), lanes=lanes)
            for got, want in zip(grads, scan.linear_scan_backward(a, ref, h0, g)):
                np.testing.assert_allclose(got.get(), want, rtol=1e-10, atol=1e-12)
            log_h = gpu_scan.linear_scan_log_cuda(cp.asarray(np.log(a)), cp.asarray(np.log(np.abs(b))),
                                                  cp.asarray(np.log(h0)), lanes=lanes)
            want = scan.linear_scan_log(np.log(a), np.log(np.abs(b)), np.log(h0))
            np.testing.assert_allclose(log_h.get(), want, rtol=1e-9, atol=1e-9)

    @pytest.mark.cuda
    @gpu
    @pytest.mark.parametrize("case", list(CASES))
    def test_cuda_kernel_reads_column_views(case):
        """Inputs as the cells pass them: strided, offset views of wider arrays."""
        cp = backend._cupy()
        _check_case(case, 37, 6, 70, np.float64, True, device=as_column_view(cp))

    @pytest.mark.cuda
    @gpu
    def test_cuda_fast_sigmoid_within_its_stated_tolerance():
        """The real intrinsics (ex2.approx, div.approx) against float64 σ: the bound the float32
        kernels rely on (the simulator only emulates it)."""
        cp = backend._cupy()
        _check_fast_sigmoid(backend.to_numpy, cp)

    @pytest.mark.cuda
    @gpu
    def test_get_kernel_picks_cuda_for_cupy_arrays():
        from minirec.kernels import cuda, get_kernel

        cp = backend._cupy()
        assert get_kernel("sru_forward", cp) is cuda.sru_forward
        assert get_kernel("mingru_backward", cp) is cuda.mingru_backward


# ---- inside the simulator subprocess -----------------------------------------------------------------
if INNER:
    SHAPES_F64 = [(1, 1, 3), (7, 2, 3)]  # T = 1 (no unrolled step); T = 7: one unrolled group of 4 + 3
    SHAPES_F32 = [(7, 2, 3)]

    @pytest.fixture(autouse=True)
    def _small_launches(monkeypatch):
        """Shrink the launch shapes: several blocks, idle threads and several time lanes even at
        B·H = 6 (the simulator runs every thread as a Python thread)."""
        from minirec.kernels.cuda import _common, matrix, scan

        assert _common.SIMULATOR, "the inner run must have NUMBA_ENABLE_CUDASIM=1"
        monkeypatch.setattr(_common, "COLUMN_THREADS", 4)
        monkeypatch.setattr(matrix, "ROW_THREADS", 2)
        monkeypatch.setattr(scan, "STEPS_PER_LANE", 2)
        monkeypatch.setattr(scan, "BLOCK_THREADS", 16)

    _params = [(s, np.float64) for s in SHAPES_F64] + [(s, np.float32) for s in SHAPES_F32]

    @pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
    @pytest.mark.parametrize("shape,dtype", _params, ids=[f"T{s[0]}B{s[1]}H{s[2]}-{d.__name__}" for s, d in _params])
    @pytest.mark.parametrize("case", list(CASES))
    def test_sim_kernel_matches_reference(case, shape, dtype, masked):
        _check_case(case, *shape, dtype, masked)

    @pytest.mark.parametrize("T,lanes", [(1, 1), (1, 2), (5, 1), (5, 8), (5, None), (9, 2), (9, 4), (9, None)])
    def test_sim_linear_scan_forward_backward_log(T, lanes):
        """Every lane count, including lanes with fewer steps than the others or none (T = 5, 8
        lanes), segments of ≥ 4 steps in both passes (T = 9, 2 lanes: the unrolled loops), plain
        2-D and 3-D columns, with and without h0."""
        from minirec.kernels import gpu_scan, scan

        rng = np.random.default_rng(T * 10 + (lanes or 0))
        for shape, with_h0 in (((T, 2, 3), True), ((T, 5), False)):
            a = rng.uniform(0.2, 1.0, shape)
            b = rng.standard_normal(shape)
            h0 = rng.standard_normal(shape[1:]) if with_h0 else None
            g = rng.standard_normal(shape)
            ref = scan.linear_scan_sequential(a, b, h0)
            _compare(gpu_scan.linear_scan_cuda(a, b, h0, lanes=lanes), ref, np.float64, "scan")
            _compare(gpu_scan.linear_scan_backward_cuda(a, ref, h0, g, lanes=lanes),
                     scan.linear_scan_backward(a, ref, h0, g), np.float64, "scan backward")
            log_h0 = np.log(np.abs(h0)) if with_h0 else None
            _compare(gpu_scan.linear_scan_log_cuda(np.log(a), np.log(np.abs(b)), log_h0, lanes=lanes),
                     scan.linear_scan_log(np.log(a), np.log(np.abs(b)), log_h0), np.float64, "log scan")

    @pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
    @pytest.mark.parametrize("case", ["mingru-parallel-g", "minlstm-parallel", "mingru-log"])
    def test_sim_parallel_modes_with_long_segments(case, masked, monkeypatch):
        """T = 9 in 2 lanes of 5 and 4 steps: the unrolled loops of both passes of both directions."""
        from minirec.kernels.cuda import scan

        monkeypatch.setattr(scan, "STEPS_PER_LANE", 5)
        assert scan.plan(9, 6, None)[2] == 2
        _check_case(case, 9, 2, 3, np.float64, masked)

    def test_sim_linear_scan_float32_and_registered_names():
        from minirec.kernels import _KERNELS, gpu_scan, scan

        rng = np.random.default_rng(1)
        a = rng.uniform(0.2, 1.0, (6, 2, 3)).astype(np.float32)
        b = rng.standard_normal((6, 2, 3)).astype(np.float32)
        h0 = rng.standard_normal((2, 3)).astype(np.float32)
        ref = scan.linear_scan_sequential(a, b, h0)
        _compare(_KERNELS["linear_scan_forward"]["cuda"](a, b, h0), ref, np.float32, "scan f32")
        _compare(_KERNELS["linear_scan_backward"]["cuda"](a, ref, h0, b),
                 scan.linear_scan_backward(a, ref, h0, b), np.float32, "scan backward f32")
        assert gpu_scan.plan(7, 6, None)[2] == 4  # ceil(7 / 2) steps → 4 lanes

    @pytest.mark.parametrize("case", list(CASES))
    def test_sim_kernel_reads_column_views(case):
        _check_case(case, 5, 2, 3, np.float64, True, device=as_column_view(np))

    _PIPELINED = ["sru", "sru-drop", "qrnn-highway", "lrn-tanh", "glrn-identity", "elrn-tanh", "olrn",
                  "mingru-sequential-g", "minlstm-sequential"]

    @pytest.mark.parametrize("T", [4, 8, 11])
    @pytest.mark.parametrize("case", _PIPELINED)
    def test_sim_pipelined_loops_at_every_group_boundary(case, T):
        """The loops load the next group of four steps while computing this one: T = 4 (one group,
        its prefetch past the end), 8 (a prefetched group used, none left), 11 (two groups and a
        tail of three from the last prefetch); forward and backward, masked."""
        _check_case(case, T, 2, 3, np.float64, True)

    def test_sim_fast_sigmoid_is_float32_only_and_can_be_turned_off(monkeypatch):
        from minirec.kernels.cuda import _common

        assert _common.fast_sigmoid_for(np.float32) and not _common.fast_sigmoid_for(np.float64)
        monkeypatch.setenv(_common.FAST_SIGMOID_VARIABLE, "0")
        assert not _common.fast_sigmoid_for(np.float32)

    def test_sim_fast_sigmoid_emulates_its_error_bound():
        """The simulator's fast sigmoid carries the intrinsics' worst-case error (so the float32
        kernel tests hold the real error budget), and that stays within the stated tolerance."""
        fast, exact = _check_fast_sigmoid(np.asarray, np)
        assert np.max(np.abs(fast / exact - 1)) > 1e-6  # the emulated error is there, not rounded away

    @pytest.mark.parametrize("case", ["sru", "qrnn", "lrn-tanh", "olrn"])
    def test_sim_float32_kernels_agree_with_the_exact_sigmoid_switched_on_and_off(case, monkeypatch):
        """float32 with the fast sigmoid (default) and with MINIREC_CUDA_FAST_SIGMOID=0 both match
        the reference within the float32 tolerance, and they differ: the switch reaches the kernel."""
        from minirec.kernels.cuda import _common

        prefix, build = CASES[case]
        forward, _ = _impls(prefix)
        args, _ = build(np.random.default_rng(3), 11, 2, 3, np.float32, True)
        fast = forward["cuda"](*args)
        monkeypatch.setenv(_common.FAST_SIGMOID_VARIABLE, "0")
        exact = forward["cuda"](*args)
        expected = forward["reference"](*args)
        _compare(fast, expected, np.float32, f"{case} fast sigmoid")
        _compare(exact, expected, np.float32, f"{case} exact sigmoid")
        assert any(a is not None and not np.array_equal(a, b) for a, b in zip(fast, exact))

    def test_sim_an_array_passed_twice_is_converted_once(monkeypatch):
        """`device_args` converts each distinct array once (a stand-in for an absent mask is often
        an array passed anyway), keeps the order, and leaves scalars alone."""
        from minirec.kernels.cuda import _common

        converted = []
        monkeypatch.setattr(_common, "_as_simulated", lambda a: converted.append(a) or ("view", id(a)))
        a, b = np.zeros(3), np.ones(2)
        out = _common.device_args(a, b, a, 2.5, b)
        assert out == (("view", id(a)), ("view", id(b)), ("view", id(a)), ("view", id(2.5)), ("view", id(b)))
        assert [x is a for x in converted] == [True, False, False] and converted[1] is b

    def test_sim_column_blocks_of_one_projection_are_converted_once(monkeypatch):
        """minGRU's k and x̃ as blocks of one projection u: u, h0, h and z converted (4 arrays); as
        separate arrays, one more."""
        from minirec.kernels.cuda import _common, minrnn

        converted = []
        as_simulated = _common._as_simulated
        def counting(a):
            if isinstance(a, np.ndarray):
                converted.append(a)
            return as_simulated(a)

        monkeypatch.setattr(_common, "_as_simulated", counting)
        rng = np.random.default_rng(0)
        u = rng.standard_normal((5, 2, 6))
        h0 = rng.uniform(0.2, 1.0, (2, 3))
        from_blocks = minrnn.mingru_forward(u[..., :3], u[..., 3:], h0)
        assert len(converted) == 4 and any(a is u for a in converted)
        converted.clear()
        from_copies = minrnn.mingru_forward(u[..., :3].copy(), u[..., 3:].copy(), h0)
        assert len(converted) == 5
        for a, b in zip(from_blocks, from_copies):
            np.testing.assert_array_equal(a, b)

    # kernel launches and cuBLAS products per call of the matrix cells, and array conversions per call
    _MATRIX_STEP_COST = {"lstm": (1, 1), "atr": (1, 1), "sgu": (1, 1), "gru-reset-after": (1, 1), "gru": (2, 2),
                         "mgu": (2, 2)}

    @pytest.mark.parametrize("case", list(_MATRIX_STEP_COST))
    def test_sim_matrix_cells_cost_one_product_and_one_launch_per_step(case, monkeypatch):
        """Per step: one product h U and one fused kernel (two of each for GRU and MGU, whose reset
        gate sits between two products); the arrays are converted once per call, however long the
        sequence (the per-step launches reuse them)."""
        from minirec.kernels.cuda import _common

        launches, conversions, products = [], [], []
        configure, as_simulated, matmul = _common.configure, _common._as_simulated, np.matmul

        def counting_configure(kernel, grid, block):
            run = configure(kernel, grid, block)
            return lambda *args: launches.append(1) or run(*args)

        monkeypatch.setattr(_common, "configure", counting_configure)
        monkeypatch.setattr(_common, "_as_simulated", lambda a: conversions.append(1) or as_simulated(a))
        monkeypatch.setattr(np, "matmul", lambda *a, **k: products.append(1) or matmul(*a, **k))
        per_step_launches, per_step_products = _MATRIX_STEP_COST[case]
        converted = {}
        for T in (3, 6):
            for part in ("forward", "backward"):
                launches.clear(), conversions.clear(), products.clear()
                prefix, build = CASES[case]
                forward, backward = _impls(prefix)
                args, make_backward_args = build(np.random.default_rng(0), T, 2, 3, np.float64, True)
                if part == "forward":
                    forward["cuda"](*args)
                else:
                    bargs = make_backward_args(forward["reference"](*args))
                    launches.clear(), conversions.clear(), products.clear()
                    backward["cuda"](*bargs)
                assert len(launches) == per_step_launches * T, (part, T, len(launches))
                assert len(products) == per_step_products * T, (part, T, len(products))
                converted.setdefault(part, set()).add(len(conversions))
        assert all(len(counts) == 1 for counts in converted.values()), f"conversions grow with T: {converted}"

    def test_sim_reversed_mask_view_is_handled():
        """The backward direction of a bidirectional layer passes mask[::-1] (negative strides)."""
        rng = np.random.default_rng(2)
        prefix, build = CASES["qrnn"]
        forward, _ = _impls(prefix)
        args, _ = build(rng, 5, 2, 3, np.float64, True)
        args = (*args[:4], args[4][::-1])
        _compare(forward["cuda"](*args), forward["reference"](*args), np.float64, "qrnn reversed mask")
