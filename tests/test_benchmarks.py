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
