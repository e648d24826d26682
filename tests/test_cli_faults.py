"""The command line under faults (issue #14), in real processes: two runs on one --out, kill -9,
a burst of Ctrl-C, SIGTERM, and bad options, each of which must end in a clear message and the
documented exit status, never a traceback, with nothing of a run lost.

The processes train a tiny SRU on a fake PTB written into ``tmp_path``; a launcher registers the
fake files' sha256 before calling `minirec.cli.main`, so nothing is downloaded."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minirec.training import CHECKPOINT, RESULTS
from minirec.training.checkpoint import load_checkpoint
from minirec.training.rundir import LOCK

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ("import json, sys; from minirec.data import download; download.SHA256.update(json.loads(sys.argv[1])); "
            "from minirec.cli import main; sys.argv = ['minirec', *sys.argv[2:]]; sys.exit(main())")
START_TIMEOUT_S = 180  # a cold numba cache compiles the kernels first


@pytest.fixture
def data(tmp_path):
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)]
    shas = {}
    for split, n in (("train", 60), ("valid", 12), ("test", 12)):
        text = "".join(" " + " ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) + " \n" for _ in range(n))
        path = tmp_path / "data" / "ptb" / f"{split}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        shas[f"ptb/{split}.txt"] = hashlib.sha256(text.encode()).hexdigest()
    return tmp_path / "data", shas


def _env(tmp_path, **extra):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               MINIREC_CACHE=str(tmp_path / "cache"))
    env.pop("MINIREC_DATA", None)
    env.update(extra)
    return env


def start(data, tmp_path, *args, **popen):
    directory, shas = data
    return subprocess.Popen([sys.executable, "-c", LAUNCHER, json.dumps(shas), *args], cwd=tmp_path,
                            env=popen.pop("env", None) or _env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **popen)


def run(data, tmp_path, *args, timeout=120, **popen):
    process = start(data, tmp_path, *args, **popen)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, err


def tiny(data, out, *more, epochs=100_000):
    """A run that goes on until stopped (epochs of 3 batches)."""
    return ["train", "ptb", "--cell", "sru", "--layers", "1", "--hidden", "8", "--embedding", "8", "--batch-size",
            "4", "--bptt", "6", "--max-batches", "3", "--epochs", str(epochs), "--data-dir", str(data[0]),
            "--out", str(out), "--no-progress", *more]


def wait_for_checkpoint(process, out):
    deadline = time.monotonic() + START_TIMEOUT_S
    while not (out / CHECKPOINT).exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "the run wrote no checkpoint"
        time.sleep(0.05)


@pytest.fixture
def processes():
    started = []
    yield started
    for process in started:  # never leave a run behind
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_two_runs_on_one_out_and_a_kill_9(data, tmp_path, processes):
    out = tmp_path / "same"
    first = start(data, tmp_path, *tiny(data, out))
    processes.append(first)
    wait_for_checkpoint(first, out)
    code, err = run(data, tmp_path, *tiny(data, out, "--hidden", "16", "--seed", "2", epochs=1))
    assert code == 2 and f"in use by another run (process {first.pid} on " in err and "Traceback" not in err
    code, err = run(data, tmp_path, "train", "ptb", "--out", str(out), "--resume", "--epochs", "1")
    assert code == 2 and f"in use by another run (process {first.pid}" in err
    assert first.poll() is None  # the first run goes on, untouched

    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert (out / LOCK).exists()  # left behind, but no process holds its lock any more
    (out / "checkpoint.npz.k1ll3d.tmp").write_bytes(b"half a checkpoint")  # as a kill mid-write leaves
    done = load_checkpoint(out / CHECKPOINT).meta["epochs_done"]
    code, err = run(data, tmp_path, "train", "ptb", "--out", str(out), "--resume", "--epochs", str(done + 1))
    assert code == 0, err
    assert f"took over a stale lock {out / LOCK} of process {first.pid}" in err
    assert "temporary file(s)" in err and "checkpoint.npz.k1ll3d.tmp" in err  # (and any the kill itself left)
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    assert json.loads((out / RESULTS).read_text())["status"] == "completed" and not (out / LOCK).exists()


@pytest.mark.parametrize("delay", [0.0, 0.13])
def test_a_burst_of_ctrl_c_saves_reports_and_exits_130(data, tmp_path, processes, delay):
    out = tmp_path / "run"
    process = start(data, tmp_path, *tiny(data, out))
    processes.append(process)
    wait_for_checkpoint(process, out)
    time.sleep(delay)
    for _ in range(30):
        process.send_signal(signal.SIGINT)
        time.sleep(0.002)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "outside the training loop" not in err and "before training" not in err
    recorded = json.loads((out / RESULTS).read_text())
    assert recorded["status"] == "interrupted" and recorded["signal"] == "SIGINT"
    assert f"minirec: {recorded['message']}" in err and not (out / LOCK).exists()
    if delay:
        return  # (resuming once is enough)
    meta = load_checkpoint(out / CHECKPOINT).meta
    code, err = run(data, tmp_path, "train", "ptb", "--out", str(out), "--resume", "--epochs",
                    str(meta["epochs_done"] + 1))
    assert code == 0, err


def test_sigterm_saves_a_checkpoint_and_exits_143(data, tmp_path, processes):
    out = tmp_path / "run"
    process = start(data, tmp_path, *tiny(data, out))
    processes.append(process)
    wait_for_checkpoint(process, out)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "SIGTERM received; stopping at the end of this batch" in err and "Traceback" not in err
    recorded = json.loads((out / RESULTS).read_text())
    assert recorded["status"] == "interrupted" and recorded["signal"] == "SIGTERM"
    assert recorded["message"].startswith("SIGTERM: interrupted ") and "checkpoint saved" in recorded["message"]


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a huge request fails at once, whatever the RAM


def test_a_model_too_big_for_memory_says_how_much_it_needs(data, tmp_path):
    args = tiny(data, tmp_path / "run", "--cell", "lstm", "--hidden", "10000000", "--embedding", "200", epochs=1)
    code, err = run(data, tmp_path, *args, preexec_fn=_limit_memory)
    assert code == 2 and "Traceback" not in err, err
    assert "out of memory loading the data or building the model (Unable to allocate" in err and "GiB" in err
    assert not (tmp_path / "run").exists()


# In this process (the same main() as the command; a traceback would fail the test as well).
@pytest.fixture
def registered(data, monkeypatch, tmp_path):
    from minirec.data import download

    for relpath, sha in data[1].items():
        monkeypatch.setitem(download.SHA256, relpath, sha)
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "cache"))
    return data


@pytest.mark.parametrize("args, message", [
    (["--out", ""], "--out is empty"),
    (["--lr", "nan"], "lr must be a finite number, got nan"),
    (["--lr", "inf"], "lr must be a finite number, got inf"),
    (["--weight-decay", "nan"], "weight_decay must be a finite number"),
    (["--lr-decay", "nan"], "lr_decay must be a finite number"),
    (["--clip", "nan"], "clip must be a finite number"),
    (["--init-range", "nan"], "init_range must be a finite number"),
    (["--out", "{tmp}/a-file/sub"], "cannot create the run directory"),
    (["--out", "{tmp}/" + "x" * 300], "File name too long"),
    (["--cell", "fofe", "--cell-option", "alpha=abc"], "cell options {'alpha': 'abc'} not accepted by 'fofe'"),
])
def test_bad_train_options_are_clear_errors(registered, tmp_path, capsys, args, message):
    from minirec.cli import main

    (tmp_path / "a-file").write_text("x")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    assert main([*tiny(registered, tmp_path / "run", epochs=1), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing left behind by a run that could not start


@pytest.mark.parametrize("args, message", [
    (["train", "sst", "--levels", ","], "levels=',' names no cell"),
    (["gradcheck", "--no-ops", "--cells", "foo"], "unknown cell 'foo'"),
    (["gradcheck", "--no-ops", "--tolerance", "nan"], "--tolerance: must be a finite number > 0"),
    (["gradcheck", "--no-ops", "--tolerance", "0"], "--tolerance: must be a finite number > 0"),
    (["gradcheck", "--no-ops", "--tolerance", "-1"], "--tolerance: must be a finite number > 0"),
])
def test_other_bad_options_are_clear_errors(tmp_path, capsys, args, message):
    from minirec.cli import main

    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2 and message in capsys.readouterr().err


def test_a_command_called_from_python_leaves_the_signal_handlers_as_they_were(registered, tmp_path):
    from minirec.cli import main

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(tiny(registered, tmp_path / "run", epochs=1)) == 0
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_forced_cuda_kernels_without_cuda_stop_before_training(data, tmp_path):
    env = _env(tmp_path, MINIREC_KERNELS="cuda", NUMBA_DISABLE_CUDA="1")  # a machine without CUDA
    code, err = run(data, tmp_path, *tiny(data, tmp_path / "run", epochs=1), env=env)
    assert code == 2 and "the cuda kernels were asked for" in err and "Traceback" not in err, err
