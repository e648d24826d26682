"""Tests for minirec.training: configuration, the loop, checkpoints, resume, Ctrl-C, divergence.

Every test writes its own tiny corpora (fake PTB text, fake SST lines) into ``tmp_path`` and
registers their sha256 in place of the real ones, so nothing is downloaded. One smoke test
trains a few batches on the real PTB in ``../shared/data`` and is skipped when it is absent.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import write_corpus

from minirec.cells import cell_names
from minirec.training import (
    BEST,
    CHECKPOINT,
    CURVES,
    PRESETS,
    RESULTS,
    TrainingError,
    add_arguments,
    learning_rate,
    loop,
    resolve_config,
    run,
    train_ptb,
    train_sst,
)
from minirec.training.checkpoint import load_checkpoint

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TIMING_KEYS = ("train_time_s", "tokens_per_s")


def pick_cell():
    for name in ("lstm", "sru", "gru", "fofe"):
        if name in cell_names():
            return name
    pytest.skip(f"no usable cell registered (have {cell_names()})")


# ---- fixtures -------------------------------------------------------------------------------------
def _sst_lines(rng, n, kind="binary"):
    good, bad, filler = ["good", "great", "fun", "fine"], ["bad", "dull", "awful", "weak"], ["a", "film", "the", "plot"]
    lines = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = [rng.choice(filler) for _ in range(rng.randint(1, 9))]
        words.insert(rng.randint(0, len(words)), rng.choice(good if label else bad))
        lines.append(f"{label} {' '.join(words)}\n")
    return "".join(lines)


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture
def sst_dir(tmp_path, monkeypatch):
    rng = random.Random(1)
    root = tmp_path / "data"
    write_corpus(monkeypatch, root, {
        "sst/binary.train.txt": _sst_lines(rng, 48),
        "sst/binary.dev.txt": _sst_lines(rng, 10),
        "sst/binary.test.txt": _sst_lines(rng, 10),
    })
    return root


def ptb_config(data_dir, out=None, **changes):
    config = dict(cell=pick_cell(), hidden=12, embedding=12, layers=2, dropout=0.3, epochs=2, batch_size=4, bptt=6,
                  max_batches=8, lr=1.0, data_dir=str(data_dir), out=None if out is None else str(out),
                  progress=False, verbose=False)
    config.update(changes)
    return config


def sst_config(data_dir, out=None, **changes):
    config = dict(cell=pick_cell(), hidden=8, embedding=8, layers=1, bidirectional=True, dropout=0.3, epochs=2,
                  batch_size=8, data_dir=str(data_dir), out=None if out is None else str(out), progress=False,
                  verbose=False)
    config.update(changes)
    return config


def curve(results):
    """The per-epoch metrics without the timings (which differ from run to run)."""
    return [{k: v for k, v in epoch.items() if k not in TIMING_KEYS} for epoch in results["epochs"]]


# ---- configuration --------------------------------------------------------------------------------
def test_presets_and_precedence():
    small = resolve_config("ptb", {"preset": "small"})
    expected = {"layers": 2, "hidden": 200, "embedding": 200, "bptt": 35, "batch_size": 20, "optimizer": "sgd",
                "lr": 1.0, "clip": 5.0, "init_range": 0.1, "lr_decay": 0.5, "decay_after": 4, "epochs": 13,
                "dropout": 0.0}
    assert {k: small[k] for k in expected} == expected
    medium = resolve_config("ptb", {"preset": "medium", "cell": "sru", "epochs": 3})
    assert (medium["hidden"], medium["dropout"], medium["init_range"], medium["cell"], medium["epochs"]) == (
        650, 0.5, 0.05, "sru", 3)
    sst = resolve_config("sst", {"preset": "sst", "hidden": None})
    assert (sst["embedding"], sst["hidden"], sst["layers"], sst["bidirectional"], sst["optimizer"], sst["pooling"]) == (
        300, 150, 2, True, "adam", "max")
    assert set(PRESETS["ptb"]) >= {"small", "medium"}
    assert resolve_config("ptb", {"init_range": 0})["init_range"] is None  # each layer's own init
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_config("ptb", {"preset": "huge"})
    with pytest.raises(ValueError, match="unknown configuration keys"):
        resolve_config("ptb", {"hiden": 3})
    with pytest.raises(ValueError, match="optimizer"):
        resolve_config("sst", {"optimizer": "rmsprop"})


def test_learning_rate_schedules():
    small = resolve_config("ptb", {"preset": "small"})
    assert [learning_rate(small, e) for e in range(1, 8)] == [1, 1, 1, 1, 0.5, 0.25, 0.125]
    medium = resolve_config("ptb", {"preset": "medium"})
    assert learning_rate(medium, 6) == 1.0
    assert learning_rate(medium, 8) == pytest.approx(1 / 1.2**2)
    assert learning_rate(resolve_config("sst"), 9) == 1e-3


def test_command_line_options(ptb_dir, tmp_path):
    parser = add_arguments(argparse.ArgumentParser())
    out = tmp_path / "cli-run"
    cell = pick_cell()
    argv = ["ptb", "--preset", "small", "--cell", cell, "--hidden", "10", "--embedding", "10", "--layers", "1",
            "--epochs", "1", "--batch-size", "4", "--bptt", "5", "--max-batches", "3", "--data-dir", str(ptb_dir),
            "--out", str(out), "--quiet", "--no-progress"]
    if cell == "fofe":
        argv += ["--cell-option", "alpha=0.7"]
    args = parser.parse_args(argv)
    assert args.dropout is None and args.seed is None  # not given: the preset decides
    assert run(args) == 0
    results = json.loads((out / RESULTS).read_text())
    assert results["status"] == "completed" and results["config"]["hidden"] == 10
    assert results["config"]["lr_decay"] == 0.5  # from the preset
    # a second run into the same directory without --resume is refused (exit status 2)
    assert run(parser.parse_args(["ptb", "--out", str(out), "--data-dir", str(ptb_dir), "--quiet"])) == 2
    # --resume with more epochs continues it
    assert run(parser.parse_args(["ptb", "--out", str(out), "--resume", "--epochs", "2", "--quiet"])) == 0
    results = json.loads((out / RESULTS).read_text())
    assert [e["epoch"] for e in results["epochs"]] == [1, 2]


def test_minirec_train_through_the_cli(ptb_dir, tmp_path):
    try:
        from minirec.cli import main
    except ImportError as error:  # another subcommand's module is missing
        pytest.skip(f"minirec.cli does not import: {error}")
    out = tmp_path / "cli"
    status = main(["train", "ptb", "--cell", pick_cell(), "--hidden", "8", "--embedding", "8", "--layers", "1",
                   "--epochs", "1", "--batch-size", "4", "--bptt", "5", "--max-batches", "2", "--data-dir",
                   str(ptb_dir), "--out", str(out), "--quiet"])
    assert status == 0 and (out / RESULTS).is_file()
    assert main(["train", "sst", "--bptt", "3", "--out", str(tmp_path / "bad"), "--quiet"]) == 2  # not an sst key


# ---- a whole run ----------------------------------------------------------------------------------
def test_ptb_run_writes_results_checkpoints_and_curves(ptb_dir, tmp_path):
    out = tmp_path / "run"
    results = train_ptb(ptb_config(ptb_dir, out))
    assert results["status"] == "completed"
    assert [e["epoch"] for e in results["epochs"]] == [1, 2]
    for epoch in results["epochs"]:
        assert epoch["batches"] == 8 and epoch["tokens_per_s"] > 0
        assert math.isfinite(epoch["train_ppl"]) and math.isfinite(epoch["valid_ppl"])
        assert epoch["train_ppl"] == pytest.approx(math.exp(epoch["train_loss"]))
    assert results["test"]["ppl"] > 1 and results["best_epoch"] in (1, 2)
    assert results["parameters"] > 0 and results["time_s"] > 0
    for key in ("platform", "python", "numpy", "device"):
        assert results["machine"][key]
    on_disk = json.loads((out / RESULTS).read_text())
    assert on_disk["status"] == "completed" and curve(on_disk) == curve(results)
    assert (out / CURVES).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.meta["epochs_done"] == 2 and checkpoint.meta["config"]["cell"] == pick_cell()
    assert "lr" in checkpoint.optimizer and checkpoint.model
    assert load_checkpoint(out / BEST).meta["best"]["epoch"] == results["best_epoch"]
    assert not list(out.glob("*.tmp"))


def test_same_seed_same_numbers(ptb_dir):
    first = train_ptb(ptb_config(ptb_dir, epochs=1))
    second = train_ptb(ptb_config(ptb_dir, epochs=1))
    other = train_ptb(ptb_config(ptb_dir, epochs=1, seed=1))
    assert curve(first) == curve(second) and first["test"] == second["test"]
    assert curve(first) != curve(other)


def test_the_loss_goes_down(ptb_dir, capsys):
    results = train_ptb(ptb_config(ptb_dir, epochs=3, max_batches=None, dropout=0.0, optimizer="adam", lr=0.01))
    ppl = [e["train_ppl"] for e in results["epochs"]]
    assert ppl[-1] < ppl[0] < 41 * 1.2  # about uniform over the 41 ids at the start
    assert "worse than a uniform guess" not in capsys.readouterr().err


def test_a_finite_but_diverged_run_is_flagged(ptb_dir, capsys):
    # ±3 weights make confident wrong guesses from the start, and lr 1e-9 keeps them: the loss stays
    # finite (no NaN stop) but far above ln 41, the loss of a uniform guess over the 41 ids
    results = train_ptb(ptb_config(ptb_dir, epochs=1, init_range=3.0, lr=1e-9, clip=0, dropout=0.0))
    assert results["status"] == "completed" and results["epochs"][0]["train_loss"] > math.log(41 * 1.1)
    err = capsys.readouterr().err
    assert "epoch 1 trained worse than a uniform guess over the 41 words" in err and "--lr" in err


# ---- resume -------------------------------------------------------------------------------------
def test_resume_gives_the_uninterrupted_curve(ptb_dir, tmp_path):
    straight = train_ptb(ptb_config(ptb_dir, tmp_path / "straight", epochs=2))
    first = train_ptb(ptb_config(ptb_dir, tmp_path / "split", epochs=1))
    assert first["status"] == "completed" and len(first["epochs"]) == 1
    resumed = train_ptb({"out": str(tmp_path / "split"), "resume": True, "epochs": 2, "verbose": False})
    assert curve(resumed) == curve(straight)
    assert resumed["test"] == straight["test"]


@pytest.mark.parametrize("how", ["exception", "signal"])
def test_ctrl_c_saves_a_checkpoint_and_resume_continues_exactly(ptb_dir, tmp_path, how, capsys):
    straight = train_ptb(ptb_config(ptb_dir, tmp_path / "straight"))

    def interrupt(epoch, batch, loss):
        if (epoch, batch) == (2, 3):
            if how == "signal":
                signal.raise_signal(signal.SIGINT)  # handled: the loop stops after this batch
            else:
                raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    stopped = train_ptb(ptb_config(ptb_dir, out), on_batch=interrupt)
    assert stopped["status"] == "interrupted" and "batch 3" in stopped["message"]
    assert "checkpoint saved" in capsys.readouterr().err
    meta = load_checkpoint(out / CHECKPOINT).meta
    assert (meta["epochs_done"], meta["batches_done"]) == (1, 3)
    assert json.loads((out / RESULTS).read_text())["status"] == "interrupted"
    resumed = train_ptb({"out": str(out), "resume": True, "verbose": False})
    assert resumed["status"] == "completed"
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


@pytest.mark.parametrize("where", [(2, 2), (1, 6)])  # mid-epoch; after an epoch's last batch (48 / 8 = 6)
def test_sst_resume_mid_epoch_is_exact(sst_dir, tmp_path, where):
    straight = train_sst(sst_config(sst_dir, tmp_path / "straight"))

    def interrupt(epoch, batch, loss):
        if (epoch, batch) == where:
            raise KeyboardInterrupt

    out = tmp_path / "interrupted"
    assert train_sst(sst_config(sst_dir, out), on_batch=interrupt)["status"] == "interrupted"
    resumed = train_sst({"out": str(out), "resume": True, "verbose": False})
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


def test_resume_errors(ptb_dir, tmp_path):
    with pytest.raises(TrainingError, match="nothing to resume"):
        train_ptb(ptb_config(ptb_dir, tmp_path / "empty", resume=True))
    with pytest.raises(TrainingError, match="out"):
        train_ptb(ptb_config(ptb_dir, None, resume=True))
    train_ptb(ptb_config(ptb_dir, tmp_path / "done", epochs=1))
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        train_ptb(ptb_config(ptb_dir, tmp_path / "done", epochs=1))
    with pytest.raises(TrainingError, match="not sst"):
        train_sst({"out": str(tmp_path / "done"), "resume": True})


def test_ctrl_c_inside_an_epochs_first_batch_resumes_exactly(ptb_dir, tmp_path, monkeypatch):
    # Stopped before epoch 2's first batch is done: the checkpoint must not carry epoch 1's
    # dropout generator over epoch 2's seed.
    straight = train_ptb(ptb_config(ptb_dir, tmp_path / "straight"))
    original, calls = loop._PTB.step, []

    def step(self, batch, carry):
        calls.append(1)
        if len(calls) == 9:  # epoch 1 has 8 batches
            raise KeyboardInterrupt
        return original(self, batch, carry)

    monkeypatch.setattr(loop._PTB, "step", step)
    out = tmp_path / "interrupted"
    assert train_ptb(ptb_config(ptb_dir, out))["status"] == "interrupted"
    monkeypatch.setattr(loop._PTB, "step", original)
    meta = load_checkpoint(out / CHECKPOINT).meta
    assert (meta["epochs_done"], meta["in_epoch"], meta["batches_done"]) == (1, True, 0)
    resumed = train_ptb({"out": str(out), "resume": True, "verbose": False})
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


def test_a_second_ctrl_c_lets_the_optimiser_step_finish(ptb_dir, tmp_path, monkeypatch):
    straight = train_ptb(ptb_config(ptb_dir, tmp_path / "straight"))
    optimizer = loop.SGD
    original, calls = optimizer.step, []

    def step(self):
        calls.append(1)
        if len(calls) == 11:  # epoch 2, batch 3: Ctrl-C twice in the middle of the update
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        original(self)

    monkeypatch.setattr(optimizer, "step", step)
    out = tmp_path / "interrupted"
    stopped = train_ptb(ptb_config(ptb_dir, out))
    monkeypatch.setattr(optimizer, "step", original)
    assert stopped["status"] == "interrupted" and "after batch 3" in stopped["message"]
    resumed = train_ptb({"out": str(out), "resume": True, "verbose": False})
    assert curve(resumed) == curve(straight) and resumed["test"] == straight["test"]


def test_ctrl_c_during_the_test_evaluation_keeps_the_last_epochs_checkpoint(ptb_dir, tmp_path, monkeypatch):
    # The test runs on the best epoch's weights; saving those as the checkpoint would make a
    # later --resume --epochs N continue from the wrong model.
    straight = train_ptb(ptb_config(ptb_dir, tmp_path / "straight", epochs=3))
    original = loop._PTB.evaluate

    def evaluate(self, split):
        if split == "test":
            raise KeyboardInterrupt
        return original(self, split)

    monkeypatch.setattr(loop._PTB, "evaluate", evaluate)
    out = tmp_path / "interrupted"
    stopped = train_ptb(ptb_config(ptb_dir, out, epochs=2))
    monkeypatch.setattr(loop._PTB, "evaluate", original)
    assert stopped["status"] == "interrupted" and "test evaluation" in stopped["message"]
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.meta["epochs_done"] == 2 and not checkpoint.meta["in_epoch"]
    tested = train_ptb({"out": str(out), "resume": True, "verbose": False})  # runs the test again
    assert tested["status"] == "completed" and tested["test"] is not None
    longer = train_ptb({"out": str(out), "resume": True, "epochs": 3, "verbose": False})
    assert curve(longer) == curve(straight) and longer["test"] == straight["test"]


def test_interrupted_best_model_write_leaves_best_and_checkpoint_in_step(ptb_dir, tmp_path, monkeypatch):
    original = loop.save_checkpoint

    def save(path, *args, **kwargs):
        if Path(path).name == BEST and kwargs["meta"]["best"]["epoch"] == 2:
            raise KeyboardInterrupt  # as if a second Ctrl-C cut the write (the file is written atomically)
        return original(path, *args, **kwargs)

    monkeypatch.setattr(loop, "save_checkpoint", save)
    out = tmp_path / "run"
    stopped = train_ptb(ptb_config(ptb_dir, out, dropout=0.0, lr=0.2))  # valid ppl 38.1, then 37.4
    assert stopped["status"] == "interrupted"
    best_file = load_checkpoint(out / BEST).meta["best"]
    assert best_file["epoch"] == 1  # (epoch 2 was better: its write was cut)
    assert load_checkpoint(out / CHECKPOINT).meta["best"] == best_file
    assert stopped["best_epoch"] == 1


def test_a_fresh_run_never_overwrites_another_runs_files(ptb_dir, tmp_path):
    out = tmp_path / "run"
    train_ptb(ptb_config(ptb_dir, out, epochs=1))
    (out / CHECKPOINT).unlink()  # e.g. deleted to save space; results.json and best.npz remain
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(TrainingError, match="already holds another run"):
        train_ptb(ptb_config(ptb_dir, out, epochs=1, seed=5))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(TrainingError, match="is a file, not a directory"):
        train_ptb(ptb_config(ptb_dir, tmp_path / "a-file", epochs=1))


def test_a_damaged_or_wrong_checkpoint_is_named(ptb_dir, tmp_path):
    out = tmp_path / "run"
    train_ptb(ptb_config(ptb_dir, out, epochs=1))
    good = (out / CHECKPOINT).read_bytes()
    for damaged in (good[:3000], b"", b"hello"):
        (out / CHECKPOINT).write_bytes(damaged)
        with pytest.raises(TrainingError, match="not a readable minirec checkpoint"):
            train_ptb({"out": str(out), "resume": True, "verbose": False})
    (out / CHECKPOINT).write_bytes((out / BEST).read_bytes())  # the best weights, not a training state
    with pytest.raises(TrainingError, match="not a training checkpoint"):
        train_ptb({"out": str(out), "resume": True, "verbose": False})


@pytest.mark.parametrize("change, message", [
    ({"clip": -1.0}, "clip must be >= 0"),  # would flip the gradient's sign
    ({"lr_decay": 0.0}, "lr_decay must be > 0"),  # was silently read as 1
    ({"lr_decay": -0.5}, "lr_decay must be > 0"),
    ({"weight_decay": -1.0}, "weight_decay must be >= 0"),
    ({"seed": -1}, "seed must be >= 0"),
    ({"init_range": -0.1}, "init_range must be >= 0"),
    ({"bidirectional": True}, "bidirectional applies to sst only"),
    ({"cell_options": {"no_such_option": 1}}, "cell options .*no_such_option.* not accepted by"),
])
def test_bad_option_values_are_refused_by_name(ptb_dir, change, message):
    with pytest.raises(ValueError, match=message):
        train_ptb(ptb_config(ptb_dir, **change))


def test_ctrl_c_after_a_step_that_broke_the_weights_saves_nothing(ptb_dir, tmp_path, monkeypatch):
    optimizer = loop.SGD
    original, calls = optimizer.step, []

    def step(self):
        original(self)
        calls.append(1)
        if len(calls) == 10:  # epoch 2, batch 2: this step overflowed, and Ctrl-C came
            self.params[0].data[...] = np.inf
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(optimizer, "step", step)
    out = tmp_path / "run"
    stopped = train_ptb(ptb_config(ptb_dir, out))
    assert stopped["status"] == "interrupted" and "no longer finite" in stopped["message"]
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.meta["epochs_done"] == 1 and not checkpoint.meta["in_epoch"]
    assert all(np.isfinite(v).all() for v in checkpoint.model.values())


def test_ctrl_c_while_drawing_the_curves_still_completes(ptb_dir, tmp_path, monkeypatch):
    from minirec.training import plots

    original = plots.plot_curves

    def plot(*args, **kwargs):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        original(*args, **kwargs)

    monkeypatch.setattr(plots, "plot_curves", plot)
    results = train_ptb(ptb_config(ptb_dir, tmp_path / "run", epochs=1))
    assert results["status"] == "completed"
    assert json.loads((tmp_path / "run" / RESULTS).read_text())["status"] == "completed"
    assert (tmp_path / "run" / CURVES).is_file()


# ---- divergence ---------------------------------------------------------------------------------
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(ptb_dir, tmp_path, monkeypatch):
    """NaN injected into the decoder bias after batch 2 of epoch 2: batch 3's loss is NaN."""
    from minirec.models import LanguageModel

    poisoned = {}
    original = LanguageModel.loss

    def loss_with_nan(self, tokens, targets, state=None):
        if poisoned:
            bias = self.decoder.bias if self.decoder is not None else self.decoder_bias
            bias.data[:] = np.nan
        return original(self, tokens, targets, state)

    def mark(epoch, batch, loss):
        if (epoch, batch) == (2, 2):
            poisoned["now"] = True

    monkeypatch.setattr(LanguageModel, "loss", loss_with_nan)
    out = tmp_path / "nan"
    results = train_ptb(ptb_config(ptb_dir, out, epochs=3), on_batch=mark)
    assert results["status"] == "diverged"
    assert "epoch 2" in results["message"] and "batch 3" in results["message"]
    assert "last good checkpoint" in results["message"]
    checkpoint = load_checkpoint(out / CHECKPOINT)
    assert checkpoint.meta["epochs_done"] == 1 and checkpoint.meta["batches_done"] == 0
    assert all(np.isfinite(v).all() for v in checkpoint.model.values())
    assert json.loads((out / RESULTS).read_text())["status"] == "diverged"
    assert len(results["epochs"]) == 1


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_learning_rate_diverges_with_a_message(ptb_dir, tmp_path, capsys):
    results = train_ptb(ptb_config(ptb_dir, tmp_path / "huge", lr=1e38, clip=0, dropout=0.0, epochs=1))
    assert results["status"] == "diverged"
    assert "epoch 1, batch" in results["message"] and "no checkpoint was written" in results["message"]
    assert "non-finite" in capsys.readouterr().err


# ---- SST ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [None, "fofe,gru"], ids=["flat", "hierarchical"])
def test_word_dropout_reaches_the_model(sst_dir, levels):
    # Recorded in the config is not enough: the same seed with and without it must train differently.
    if levels and "fofe" not in cell_names():
        pytest.skip("needs fofe")
    def run(p):
        config = sst_config(sst_dir, epochs=1, dropout=0.0, word_dropout=p)
        if levels:
            config.update(levels=levels, chunk_size=3)
            del config["layers"]
        return curve(train_sst(config))

    assert run(0.3) != run(0.0)
    assert run(0.3) == run(0.3)  # and nothing else differs from run to run


def test_sst_run(sst_dir, tmp_path):
    results = train_sst(sst_config(sst_dir, tmp_path / "sst", pooling="last", word_dropout=0.2))
    assert results["status"] == "completed"
    for epoch in results["epochs"]:
        assert 0 <= epoch["train_acc"] <= 1 and 0 <= epoch["valid_acc"] <= 1
    assert 0 <= results["test"]["acc"] <= 1
    assert (tmp_path / "sst" / CURVES).is_file()


def test_sst_hierarchical_levels(sst_dir):
    if "fofe" not in cell_names():
        pytest.skip("needs fofe")
    upper = next((c for c in ("sgu", "gru", "lstm") if c in cell_names()), "fofe")
    config = sst_config(sst_dir, levels=f"fofe,{upper}", chunk_size=3, epochs=1, word_dropout=0.3)
    with pytest.raises(ValueError, match=r"\['layers'\] do not apply with levels"):
        train_sst(config)  # layers=1 would be recorded but not used
    del config["layers"]
    results = train_sst(config)
    assert results["status"] == "completed"
    assert results["config"]["word_dropout"] == 0.3
    # the flat RNN's keys, unused by the hierarchy, are not recorded as if they had been
    assert all(results["config"][key] is None for key in ("cell", "cell_options", "layers", "bidirectional"))
    assert results["config"]["levels"] == ["fofe", upper]


def test_progress_bar_can_be_forced(ptb_dir, capsys):
    train_ptb(ptb_config(ptb_dir, epochs=1, max_batches=2, progress=True))
    assert "epoch 1/1" in capsys.readouterr().err


def test_gpu_run_or_a_clear_error(ptb_dir, tmp_path):
    from minirec import backend

    if not backend.cuda_available():
        with pytest.raises(TrainingError, match="CUDA"):
            train_ptb(ptb_config(ptb_dir, device="gpu"))
        return
    results = train_ptb(ptb_config(ptb_dir, tmp_path / "gpu", device="gpu", epochs=1, max_batches=3))
    assert results["status"] == "completed" and results["machine"]["device"] == "gpu"


# ---- the real corpus ----------------------------------------------------------------------------
@pytest.mark.skipif(not (REAL_DATA / "ptb" / "train.txt").is_file(), reason="no ../shared/data/ptb")
def test_real_ptb_smoke(tmp_path):
    cell = pick_cell()
    results = train_ptb({"cell": cell, "preset": "small", "epochs": 1, "max_batches": 3, "max_eval_batches": 2,
                         "data_dir": str(REAL_DATA), "out": str(tmp_path / "real"), "progress": False,
                         "verbose": False})
    assert results["status"] == "completed"
    assert results["vocab_size"] == 10000
    epoch = results["epochs"][0]
    assert epoch["batches"] == 3 and epoch["tokens_per_s"] > 0
    assert 1000 < epoch["train_ppl"] < 20000  # about uniform over 10,000 words after 3 batches


def test_word_dropout_is_an_sst_option_and_is_checked():
    config = resolve_config("sst", {"word_dropout": 0.25})
    assert config["word_dropout"] == 0.25
    with pytest.raises(ValueError, match="word_dropout must be in"):
        resolve_config("sst", {"word_dropout": 1.5})
    with pytest.raises(ValueError, match="unknown configuration keys for ptb"):
        resolve_config("ptb", {"word_dropout": 0.25})
