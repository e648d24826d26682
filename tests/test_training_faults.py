"""Training runs under faults (issue #14), in this process: the run directory's lock, stale
temporary files, impossible or full --out, signals, foreign files at resume, bad option values.
The same faults through the command line, in real processes: test_cli_faults.py.

Every test writes its own tiny PTB into ``tmp_path`` and registers its sha256, as
test_training.py does (nothing is downloaded)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from minirec.training import BEST, CHECKPOINT, RESULTS, TrainingError, checkpoint, loop, train_ptb
from minirec.training.checkpoint import load_checkpoint, write_json_atomic
from minirec.training.rundir import LOCK, RunDirectory

TIMING_KEYS = ("train_time_s", "tokens_per_s")


pytestmark = pytest.mark.usefixtures("isolated_cache")


def config(data_dir, out=None, **changes):
    base = dict(cell="sru", hidden=12, embedding=12, layers=2, dropout=0.3, epochs=2, batch_size=4, bptt=6,
                max_batches=8, lr=1.0, data_dir=str(data_dir), out=None if out is None else str(out),
                progress=False, verbose=False)
    base.update(changes)
    return base


def curve(results):
    return [{k: v for k, v in epoch.items() if k not in TIMING_KEYS} for epoch in results["epochs"]]


def files(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in directory.iterdir()}


# ---- the lock -----------------------------------------------------------------------------------
def test_a_locked_run_directory_refuses_a_second_run_and_a_resume(ptb_dir, tmp_path):
    out = tmp_path / "run"
    train_ptb(config(ptb_dir, out, epochs=1))
    before = files(out)
    held = RunDirectory.open(out)  # as a run in progress does (another open file: flock conflicts)
    try:
        for attempt in (config(ptb_dir, out, epochs=1, hidden=16, seed=2), {"out": str(out), "resume": True}):
            with pytest.raises(TrainingError, match=f"in use by another run \\(process {os.getpid()} on "):
                train_ptb(attempt)
    finally:
        held.close()
    assert files(out) == before  # nothing of the first run was touched
    resumed = train_ptb({"out": str(out), "resume": True, "epochs": 2, "verbose": False})
    assert resumed["status"] == "completed" and not (out / LOCK).exists()  # released at the end


def test_a_stale_lock_is_taken_over_with_a_note(ptb_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    # left by a process killed with -9: the file stays, its flock went with the process
    (out / LOCK).write_text(json.dumps({"pid": 999_999_999, "host": "elsewhere", "started": 0, "command": "old"}))
    results = train_ptb(config(ptb_dir, out, epochs=1, verbose=True))
    assert results["status"] == "completed"
    err = capsys.readouterr().err
    assert "took over a stale lock" in err and "process 999999999 on elsewhere" in err
    assert not (out / LOCK).exists()


def test_stale_temporary_files_are_removed_at_start_and_resume(ptb_dir, tmp_path, capsys):
    out = tmp_path / "run"
    train_ptb(config(ptb_dir, out, epochs=1))
    stale = [out / "checkpoint.npz.k3j2h1.tmp", out / "best.npz.abc.tmp", out / ".results.json.77.deadbeef.tmp"]
    for path in stale:
        path.write_bytes(b"x" * 1000)
    (out / "notes.tmp").write_text("mine")  # not ours: kept
    train_ptb({"out": str(out), "resume": True, "epochs": 2, "verbose": True})
    assert not any(path.exists() for path in stale) and (out / "notes.tmp").exists()
    assert "removed 3 temporary file(s)" in capsys.readouterr().err


# ---- --out that cannot be used ------------------------------------------------------------------
@pytest.mark.parametrize("make_out, message", [
    (lambda tmp: "", "--out is empty"),
    (lambda tmp: str(tmp / "a-file" / "sub"), "cannot create the run directory"),
    (lambda tmp: str(tmp / ("x" * 300)), "cannot create the run directory .*File name too long"),
])
def test_an_impossible_out_is_refused_before_any_work(ptb_dir, tmp_path, make_out, message):
    (tmp_path / "a-file").write_text("x")
    calls = []
    with pytest.raises(TrainingError, match=message):
        train_ptb(config(ptb_dir, make_out(tmp_path)), on_batch=lambda *a: calls.append(a))
    assert not calls


def test_a_run_that_cannot_start_leaves_no_empty_directory(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(Exception, match="not found"):
        train_ptb(config(tmp_path / "no-data", out))
    assert not out.exists()


def _failing_writes(monkeypatch, should_fail):
    """Make save_npz_atomic raise ENOSPC (after writing half a temporary file) when ``should_fail(path)``."""
    original = checkpoint.save_npz_atomic

    def save(path, arrays):
        if should_fail(Path(path)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return original(path, arrays)

    monkeypatch.setattr(checkpoint, "save_npz_atomic", save)
    return original


def test_a_full_disk_keeps_the_last_good_checkpoint_and_says_so(ptb_dir, tmp_path, monkeypatch):
    straight = train_ptb(config(ptb_dir, tmp_path / "straight", epochs=3))
    out = tmp_path / "run"
    epochs_saved = []

    def full_from_epoch_2(path):
        if path.name == CHECKPOINT:
            epochs_saved.append(1)
        return path.name == CHECKPOINT and len(epochs_saved) >= 2

    original = _failing_writes(monkeypatch, full_from_epoch_2)
    failed = train_ptb(config(ptb_dir, out, epochs=3))
    assert failed["status"] == "failed"
    assert "No space left on device: the disk is full" in failed["message"]
    assert "after epoch 1) is kept" in failed["message"]
    recorded = json.loads((out / RESULTS).read_text())
    assert recorded["status"] == "failed" and recorded["message"] == failed["message"]
    assert load_checkpoint(out / CHECKPOINT).meta["epochs_done"] == 1
    monkeypatch.setattr(checkpoint, "save_npz_atomic", original)  # space again
    resumed = train_ptb({"out": str(out), "resume": True, "verbose": False})
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


def test_a_full_disk_while_ctrl_c_saves_keeps_the_previous_checkpoint(ptb_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    train_ptb(config(ptb_dir, out, epochs=1))
    _failing_writes(monkeypatch, lambda path: path.name == CHECKPOINT)

    def interrupt(epoch, batch, loss):
        if batch == 3:
            signal.raise_signal(signal.SIGINT)

    stopped = train_ptb({"out": str(out), "resume": True, "epochs": 2, "verbose": False}, on_batch=interrupt)
    assert stopped["status"] == "interrupted" and "the checkpoint could not be saved" in stopped["message"]
    assert "disk is full" in stopped["message"] and "after epoch 1) is kept" in stopped["message"]
    assert load_checkpoint(out / CHECKPOINT).meta["epochs_done"] == 1
    assert json.loads((out / RESULTS).read_text())["status"] == "interrupted"


def test_out_of_memory_in_training_is_a_clear_stop(ptb_dir, tmp_path, monkeypatch):
    original = loop._PTB.step

    def step(self, batch, carry):
        if self.config["max_batches"] and getattr(self, "steps", 0) == 10:
            raise MemoryError("Unable to allocate 75.0 GiB for an array with shape (10000000, 2000)")
        self.steps = getattr(self, "steps", 0) + 1
        return original(self, batch, carry)

    monkeypatch.setattr(loop._PTB, "step", step)
    results = train_ptb(config(ptb_dir, tmp_path / "run"))
    assert results["status"] == "failed" and "out of memory in epoch 2" in results["message"]
    assert "Unable to allocate 75.0 GiB" in results["message"] and "after epoch 1) is kept" in results["message"]


# ---- signals ------------------------------------------------------------------------------------
def test_ctrl_c_during_the_final_test_stops_it(ptb_dir, tmp_path, monkeypatch):
    original = loop._PTB.evaluate

    def evaluate(self, split):
        if split == "test":
            signal.raise_signal(signal.SIGINT)  # the first Ctrl-C: there is nothing to save, stop now
        return original(self, split)

    monkeypatch.setattr(loop._PTB, "evaluate", evaluate)
    out = tmp_path / "run"
    results = train_ptb(config(ptb_dir, out))
    assert results["status"] == "interrupted" and "test evaluation" in results["message"]
    assert results["test"] is None and json.loads((out / RESULTS).read_text())["status"] == "interrupted"


def test_sigterm_is_a_ctrl_c_with_its_own_name(ptb_dir, tmp_path):
    straight = train_ptb(config(ptb_dir, tmp_path / "straight"))
    out = tmp_path / "run"

    def terminate(epoch, batch, loss):
        if (epoch, batch) == (2, 3):
            signal.raise_signal(signal.SIGTERM)

    stopped = train_ptb(config(ptb_dir, out), on_batch=terminate)
    assert stopped["status"] == "interrupted" and stopped["signal"] == "SIGTERM"
    assert stopped["message"].startswith("SIGTERM: interrupted in epoch 2 after batch 3")
    resumed = train_ptb({"out": str(out), "resume": True, "verbose": False})
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


def test_the_signal_handlers_are_restored_after_a_run(ptb_dir):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train_ptb(config(ptb_dir, epochs=1))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---- resume validates the directory -------------------------------------------------------------
def test_resume_refuses_another_runs_best_model_before_training(ptb_dir, tmp_path):
    ours, other = tmp_path / "ours", tmp_path / "other"
    train_ptb(config(ptb_dir, ours, epochs=1))
    train_ptb(config(ptb_dir, other, epochs=1, hidden=16, embedding=16))
    shutil.copy(other / BEST, ours / BEST)
    calls = []
    with pytest.raises(TrainingError, match=f"{BEST} belongs to another run .*'embedding', 'hidden'"):
        train_ptb({"out": str(ours), "resume": True, "epochs": 2, "verbose": False},
                  on_batch=lambda *a: calls.append(a))
    assert not calls
    shutil.copy(other / RESULTS, ours / RESULTS)
    (ours / BEST).unlink()
    with pytest.raises(TrainingError, match=f"{RESULTS} belongs to another run"):
        train_ptb({"out": str(ours), "resume": True, "epochs": 2, "verbose": False})


def test_resume_refuses_a_best_model_of_the_right_config_but_wrong_weights(ptb_dir, tmp_path):
    out = tmp_path / "run"
    train_ptb(config(ptb_dir, out, epochs=1))
    best = load_checkpoint(out / BEST)
    name = sorted(best.model)[0]
    best.model[name] = best.model[name][..., :1]  # another shape under the same configuration
    checkpoint.save_checkpoint(out / BEST, best.model, meta=best.meta)
    with pytest.raises(TrainingError, match=f"{BEST} does not fit this run's model .*wrong shapes"):
        train_ptb({"out": str(out), "resume": True, "epochs": 2, "verbose": False})


# ---- option values ------------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [
    ("lr", float("nan")), ("lr", float("inf")), ("weight_decay", float("nan")), ("lr_decay", float("nan")),
    ("clip", float("nan")), ("init_range", float("nan")), ("dropout", float("nan")), ("lr", "0.1"),
    ("hidden", 3.5), ("bptt", "35"), ("layers", True), ("epochs", float("inf")),
])
def test_every_numeric_option_is_checked_by_name(ptb_dir, key, value):
    with pytest.raises(ValueError, match=f"{key} must be a (finite|whole) number, got"):
        train_ptb(config(ptb_dir, **{key: value}))


def test_empty_levels_are_refused():
    from minirec.training import resolve_config

    with pytest.raises(ValueError, match="levels=',' names no cell"):
        resolve_config("sst", {"levels": ","})


def test_results_json_is_strict_json(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"ppl": float("inf"), "epochs": [{"loss": float("nan")}]})

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    assert json.loads(path.read_text(), parse_constant=refuse) == {"ppl": None, "epochs": [{"loss": None}]}
