"""The benchmark entry points fail early and clearly where they cannot run (here: no GPU).

The measurements themselves are not tested (benchmark scripts print tables; nothing is timed in
the test suite); what is tested is that a GPU session's script refuses to start without a GPU or
with a misspelt step, before spending any device time, and that the GPU benchmark's plan prints
without one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import minirec

ROOT = Path(__file__).resolve().parents[1]
SESSION = ROOT / "benchmarks" / "gpu_session.sh"
needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _session(tmp_path, *steps):
    env = {**os.environ, "OUT": str(tmp_path)}
    return subprocess.run(["bash", str(SESSION), *steps], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@needs_bash
def test_gpu_session_rejects_an_unknown_step_before_doing_anything(tmp_path):
    done = _session(tmp_path, "tests", "kernals")
    assert done.returncode == 2
    assert "unknown step 'kernals'" in done.stderr
    assert not (tmp_path / "info.txt").exists()


@needs_bash
@pytest.mark.skipif(minirec.cuda_available(), reason="a GPU is present: the session would run")
def test_gpu_session_without_a_gpu_says_so_and_stops(tmp_path):
    done = _session(tmp_path, "tests")
    assert done.returncode == 2
    assert "no usable CUDA GPU" in done.stderr
    info = (tmp_path / "info.txt").read_text()
    assert "cuda_usable  False" in info  # `python -m minirec info` ran, from the checkout
    assert not (tmp_path / "cuda-tests.log").exists()


def test_gpu_benchmark_plan_prints_without_a_gpu():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "512x32x512" in done.stdout and "planned" in done.stdout


# ---- benchmarks/gpu_first_run.sh: one run that measures everything ---------------------------------
FIRST_RUN = ROOT / "benchmarks" / "gpu_first_run.sh"


def _first_run(tmp_path, path, total=None):
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PATH": path}
    if total is not None:
        env["TOTAL_SECONDS"] = str(total)
    return subprocess.run(["bash", str(FIRST_RUN)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)


@needs_bash
@pytest.mark.skipif(minirec.cuda_available(), reason="a GPU is present: the run would go on")
def test_first_run_without_a_gpu_stops_after_the_preflight_naming_what_is_missing(tmp_path):
    python_dir = os.path.dirname(sys.executable)  # the script calls python3: this interpreter's
    done = _first_run(tmp_path, python_dir + os.pathsep + os.environ["PATH"])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "GPU is not usable here" in done.stderr
    log = (tmp_path / "out" / "preflight.log").read_text()
    assert "cuda_usable  False" in log and "FAIL " in log  # the preflight's first failed check
    assert not (tmp_path / "out" / "micro.log").exists() and not (tmp_path / "out" / "tests.log").exists()


@needs_bash
def test_first_run_goes_past_a_step_that_times_out_and_summarises(tmp_path):
    """With a stand-in python3 whose test step hangs: that step is cut at the time left, the run
    goes on, the last step is skipped for lack of time, and the summary says so, exit 1."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text(
        "#!/usr/bin/env bash\n"
        'case "$*" in\n'
        '  -c*) echo "cuda_usable  True" ;;\n'
        '  *gpu_micro.py*) printf "Single launches: CPU and GPU time per call\\nrow 1\\n" ;;\n'
        "  *pytest*) sleep 60 ;;\n"
        '  *gpu.py*) echo "Layers: never reached" ;;\n'
        "esac\n")
    (fake / "python3").chmod(0o755)
    done = _first_run(tmp_path, f"{fake}{os.pathsep}{os.environ['PATH']}", total=8)
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    lines = {line.split()[0]: line for line in summary.splitlines() if line.split()}
    assert " ok " in lines["preflight"] and " ok " in lines["micro"]
    assert "timed out" in lines["tests"]
    assert "skipped: no time left" in lines["bench"]
    assert "row 1" in summary  # the micro table is repeated at the end


def test_gpu_micro_plan_prints_without_a_gpu():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_micro.py"), "--dry-run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "planned: SRU bwd" in done.stdout and "planned: CuPy copy" in done.stdout


def test_cpu_side_by_side_table_prints_each_layer_beside_its_peer():
    """The side-by-side rows of benchmarks/cpu.py (torch left out: it is optional) at a tiny shape."""
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu.py"), "--side-only", "--no-torch",
                           "--shapes", "3x2x8", "--repeats", "1"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("Side by side", 1)[1]
    for cell in ("sru", "lrn", "mingru", "qrnn"):
        row = next(line for line in table.splitlines() if line.startswith(cell + " "))
        assert "3x2x8" in row and "BLAS floor" in row
    assert "Layers, forward" not in done.stdout  # --side-only: nothing else ran


def test_gpu_micro_rows_run_in_the_simulator():
    """Every row of benchmarks/gpu_micro.py called once in the CUDA simulator, NumPy standing in for
    CuPy: the argument lists are right before a GPU minute is spent on them."""
    script = (
        "import sys, types, numpy as np\n"
        f"sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); sys.path.insert(0, {str(ROOT)!r})\n"
        "import gpu_micro\n"
        "names = ('zeros', 'abs', 'empty_like', 'copyto', 'float32')\n"
        "cp = types.SimpleNamespace(**{n: getattr(np, n) for n in names})\n"
        "cp.random = np.random\n"
        "cp.RawKernel = lambda source, name: (lambda grid, block, args: None)\n"
        "names = []\n"
        "for name, shape, fn, moved in gpu_micro.cases(cp, (5, 2, 3)):\n"
        "    fn()\n"
        "    names.append(name)\n"
        "assert tuple(names) == gpu_micro.ROWS, names\n"
        "print('rows ran:', len(names))\n")
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rows ran: 9" in done.stdout
