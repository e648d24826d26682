"""Tests for the classification sets (minirec.data.classify), the task ``classify`` with its
folds and summary (minirec.training.classify), and early stopping (``patience``, every task).

Tiny corpora are written into ``tmp_path`` with their sha256 registered in place of the real
ones; the checks on the real files in ``../shared/data/classify`` skip when those are absent.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from minirec.data import DataError, download
from minirec.data.classify import (
    CV_DATASETS,
    DATASETS,
    fold_assignment,
    load_classify,
    read_labelled_file,
    stratified_split,
)
from minirec.training import CHECKPOINT, RESULTS, add_arguments, loop, run, train_sst
from minirec.training.classify import SUMMARY, summarise, train_classify

# ../shared/data beside the project (from a git worktree under wt/: one level further up)
REAL_DATA = next((p / "shared" / "data" for p in Path(__file__).resolve().parents[2:4]
                  if (p / "shared" / "data" / "classify").is_dir()), Path("../shared/data"))
WORDS = {0: ["bad", "dull", "awful"], 1: ["good", "great", "fun"]}
FILLER = ["a", "film", "the", "plot", "caf\xe9"]  # é: one Latin-1 byte


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIREC_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINIREC_DATA", raising=False)


def _lines(rng, n, labels=(0, 1)):
    out = []
    for _ in range(n):
        label = rng.choice(labels)
        words = [rng.choice(FILLER) for _ in range(rng.randint(1, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(WORDS[label % 2]))
        out.append(f"{label} {' '.join(words)}\n")
    return "".join(out)


def _write(monkeypatch, root: Path, relpath: str, data: bytes):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    monkeypatch.setitem(download.SHA256, relpath, hashlib.sha256(data).hexdigest())
    return path


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """cr (UTF-8, 60 lines, a label without words) and trec (Latin-1 train, 6 classes)."""
    rng = random.Random(3)
    root = tmp_path / "data"
    _write(monkeypatch, root, "classify/cr.all.txt", (_lines(rng, 60) + "1 \n").replace("caf\xe9", "cafe").encode())
    _write(monkeypatch, root, "classify/trec.train.txt", _lines(rng, 60, labels=range(6)).encode("latin-1"))
    _write(monkeypatch, root, "classify/trec.test.txt", _lines(rng, 12, labels=range(6)).replace("caf\xe9", "x")
           .encode())
    return root


def config(data_dir, out=None, **changes):
    base = dict(dataset="cr", folds=3, cell="sru", hidden=8, embedding=8, layers=1, dropout=0.0, epochs=2,
                batch_size=8, data_dir=str(data_dir), out=None if out is None else str(out), progress=False,
                verbose=False)
    base.update(changes)
    return base


# ---- reading the files ----------------------------------------------------------------------------
def test_latin1_and_the_nel_byte_stay_inside_their_sentence(tmp_path):
    # 0x85 is U+0085 (NEL) in Latin-1: str.splitlines would cut the first sentence in two (and
    # read "1 so good" as a third); inside a line it separates words, like the ellipsis it stands for
    path = tmp_path / "mr.txt"
    path.write_bytes(b"0 a caf\xe9 \x851 so good\x85 fine\n0 dull\n\n")
    sentences = read_labelled_file(path, "latin-1", num_classes=2)
    assert sentences == [(["a", "caf\xe9", "1", "so", "good", "fine"], 0), (["dull"], 0)]
    with pytest.raises(DataError, match=r"not utf-8 text"):
        read_labelled_file(path, "utf-8")


def test_bad_lines_are_named_and_a_label_alone_is_skipped(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"1 fine\n0\n2 too high\n")
    assert read_labelled_file(path, num_classes=3) == [(["fine"], 1), (["too", "high"], 2)]
    with pytest.raises(DataError, match=r"x.txt, line 3: label 2 is outside 0..1"):
        read_labelled_file(path, num_classes=2)
    path.write_bytes(b"1 fine\npositive words\n")
    with pytest.raises(DataError, match=r"line 2: the label 'positive' is not an integer"):
        read_labelled_file(path)


def test_a_missing_file_names_where_to_get_it(tmp_path):
    with pytest.raises(DataError, match=r"classify/mr.all.txt not found(.|\n)*sent-conv-torch/master/data/rt-polarity"):
        load_classify("mr", tmp_path / "empty", fold=0, download=False)
    assert download.SHA256["classify/trec.test.txt"].startswith("92a6a3ce")  # ../shared/data/README.md's


# ---- folds ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("folds", [2, 3, 10])
def test_folds_are_disjoint_covering_stratified_and_fixed_by_the_seed(folds):
    labels = np.array([0] * 37 + [1] * 71 + [2] * 5)
    rng = np.random.default_rng(1)
    labels = labels[rng.permutation(len(labels))]
    assignment = fold_assignment(labels, folds, seed=7)
    # one fold per example, every fold used: disjoint and covering
    assert assignment.shape == labels.shape and set(assignment) == set(range(folds))
    sizes = np.bincount(assignment, minlength=folds)
    assert sizes.max() - sizes.min() <= 1
    for label in np.unique(labels):  # each label spread evenly (± 1) over the folds
        per_fold = np.bincount(assignment[labels == label], minlength=folds)
        assert per_fold.max() - per_fold.min() <= 1
    assert np.array_equal(assignment, fold_assignment(labels, folds, seed=7))
    assert not np.array_equal(assignment, fold_assignment(labels, folds, seed=8))


def test_fold_assignment_refuses_impossible_requests():
    with pytest.raises(ValueError, match="folds must be at least 2"):
        fold_assignment([0, 1, 0], 1, seed=0)
    with pytest.raises(ValueError, match="10 folds need at least 10 examples"):
        fold_assignment([0, 1, 0], 10, seed=0)


def test_dev_split_is_stratified():
    labels = np.array([0] * 90 + [1] * 10)
    chosen = stratified_split(labels, 0.1, seed=(0, 1))
    assert Counter(labels[chosen]) == {0: 9, 1: 1}
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        stratified_split(labels, 1.0, seed=0)


def test_load_classify_partitions_each_fold(data_dir):
    all_lines = [line for line in (data_dir / "classify/cr.all.txt").read_text().splitlines() if len(line) > 2]
    tests = []
    for fold in range(3):
        corpus = load_classify("cr", data_dir, fold=fold, folds=3, seed=0)
        sizes = [len(corpus.train), len(corpus.dev), len(corpus.test)]
        assert sum(sizes) == len(all_lines) == 60 and min(sizes) > 0  # the wordless line is dropped
        assert corpus.num_classes == 2
        tests.append(len(corpus.test))
        # the vocabulary is the training part's: a word seen only in test is <unk> (id 1)
        train_ids = set(np.concatenate([e.ids for e in corpus.train]).tolist())
        assert 1 not in train_ids
    assert sum(tests) == 60  # the test folds cover the set
    again = load_classify("cr", data_dir, fold=1, folds=3, seed=0)
    other = load_classify("cr", data_dir, fold=1, folds=3, seed=1)
    first = load_classify("cr", data_dir, fold=1, folds=3, seed=0)
    assert [e.ids.tolist() for e in again.test] == [e.ids.tolist() for e in first.test]
    assert [e.ids.tolist() for e in other.test] != [e.ids.tolist() for e in first.test]


def test_trec_has_its_split_and_a_dev_slice(data_dir):
    corpus = load_classify("trec", data_dir)
    assert corpus.num_classes == 6
    assert len(corpus.test) == 12 and len(corpus.train) + len(corpus.dev) == 60 and len(corpus.dev) >= 6
    assert "caf\xe9" in corpus.vocab  # the Latin-1 byte decoded, not refused
    with pytest.raises(ValueError, match="trec has its own test set: it takes no fold"):
        load_classify("trec", data_dir, fold=0)
    with pytest.raises(ValueError, match=r"cr is cross-validated: fold must be in 0..9, got None"):
        load_classify("cr", data_dir)
    with pytest.raises(ValueError, match="unknown dataset 'imdb'"):
        load_classify("imdb", data_dir)


def test_a_changed_file_is_refused(data_dir):
    path = data_dir / "classify/cr.all.txt"
    path.write_bytes(path.read_bytes() + b"1 extra\n")
    with pytest.raises(DataError, match="checksum mismatch"):
        load_classify("cr", data_dir, fold=0, folds=3)


# ---- training: a fold, the summary, resume --------------------------------------------------------
def test_cross_validation_writes_each_fold_and_the_summary(data_dir, tmp_path):
    out = tmp_path / "cr"
    summary = train_classify(config(data_dir, out))
    assert summary["status"] == "completed"
    assert summary["completed"] == [0, 1, 2] and summary["missing"] == []
    accuracies = [json.loads((out / f"fold-{k}" / RESULTS).read_text())["test"]["acc"] for k in range(3)]
    assert [f["test_acc"] for f in summary["per_fold"]] == accuracies
    assert summary["test_acc_mean"] == pytest.approx(np.mean(accuracies))
    assert summary["test_acc_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert summary["epoch_time_s"] > 0 and summary["config"]["dataset"] == "cr"
    assert json.loads((out / SUMMARY).read_text())["per_fold"] == summary["per_fold"]


def test_a_later_merge_keeps_the_machine_the_folds_ran_on(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "cr"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    train_classify(config(data_dir, out, fold=0))
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")  # `--summary` later, from another shell
    merged = summarise(out)
    ran_on = json.loads((out / "fold-0" / RESULTS).read_text())["machine"]
    assert merged["machine"] == ran_on and ran_on["threads"].get("OPENBLAS_NUM_THREADS") == "1"


def test_one_fold_then_resume_runs_only_the_missing_folds(data_dir, tmp_path):
    out = tmp_path / "cr"
    partial = train_classify(config(data_dir, out, fold=1))
    assert partial["completed"] == [1] and partial["missing"] == [0, 2]
    assert partial["test_acc_std"] is None  # one fold: no spread
    assert not (out / "fold-0").exists()
    before = (out / "fold-1" / RESULTS).read_text()
    trained = []
    summary = train_classify(config(data_dir, out, resume=True), on_batch=lambda e, b, loss: trained.append(e))
    assert summary["completed"] == [0, 1, 2]
    assert (out / "fold-1" / RESULTS).read_text() == before  # fold 1 was not trained again
    assert len(trained) == 2 * sum(-(-len(load_classify("cr", data_dir, fold=k, folds=3).train) // 8)
                                   for k in (0, 2))
    with pytest.raises(Exception, match="already holds a checkpoint"):  # a fresh run never overwrites
        train_classify(config(data_dir, out, fold=0))


def test_an_interrupted_fold_resumes_from_its_checkpoint(data_dir, tmp_path):
    out = tmp_path / "cr"

    def stop_in_fold_1(epoch, batch, loss):
        if epoch == 2 and batch == 1 and (out / "fold-1").exists() and not (out / "fold-2").exists():
            raise KeyboardInterrupt

    first = train_classify(config(data_dir, out), on_batch=stop_in_fold_1)
    assert first["status"] == "interrupted" and first["completed"] == [0]
    assert (out / "fold-1" / CHECKPOINT).is_file() and not (out / "fold-2").exists()
    summary = train_classify(config(data_dir, out, resume=True))
    assert summary["status"] == "completed" and summary["completed"] == [0, 1, 2]
    uninterrupted = train_classify(config(data_dir, tmp_path / "again"))
    assert [f["test_acc"] for f in summary["per_fold"]] == [f["test_acc"] for f in uninterrupted["per_fold"]]


def test_summary_refuses_a_mix_of_runs(data_dir, tmp_path):
    out = tmp_path / "cr"
    train_classify(config(data_dir, out, fold=0))
    train_classify(config(data_dir, tmp_path / "other", fold=1, cell="lstm"))
    (tmp_path / "other" / "fold-1").rename(out / "fold-1")
    with pytest.raises(ValueError, match="mixes runs: cell is 'sru' in one fold, 'lstm' in fold 1"):
        summarise(out)
    with pytest.raises(FileNotFoundError, match="no fold results"):
        summarise(tmp_path / "empty")


def test_trec_is_one_run(data_dir, tmp_path):
    results = train_classify(config(data_dir, tmp_path / "trec", dataset="trec", folds=None))
    assert results["status"] == "completed" and results["task"] == "classify"
    assert 0 <= results["test"]["acc"] <= 1 and (tmp_path / "trec" / RESULTS).is_file()


@pytest.mark.parametrize("changes, message", [
    ({"dataset": None}, "dataset must be one of"),
    ({"dataset": "trec"}, "trec has its own test set: --folds/--fold apply to mr, subj, cr, mpqa"),
    ({"folds": 1}, "folds must be at least 2"),
    ({"fold": 3}, r"fold must be in 0..2 \(with 3 folds\), got 3"),
    ({"dataset": "trec", "folds": None, "dev_fraction": 0.0}, r"dev_fraction must be in \(0, 1\)"),
])
def test_classify_options_are_checked(data_dir, changes, message):
    with pytest.raises(ValueError, match=message):
        train_classify(config(data_dir, **changes))


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_command_line_folds_and_summary(data_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    common = ["classify", "--dataset", "cr", "--folds", "3", "--cell", "sru", "--hidden", "8", "--embedding", "8",
              "--layers", "1", "--epochs", "1", "--batch-size", "8", "--data-dir", str(data_dir), "--out", str(out),
              "--quiet"]
    assert run(_parse(common + ["--fold", "2"])) == 0
    assert run(_parse(["classify", "--out", str(out), "--summary"])) == 0
    assert "cr · sru: test acc" in capsys.readouterr().out
    assert json.loads((out / SUMMARY).read_text())["completed"] == [2]
    assert run(_parse(common + ["--fold", "3"])) == 2
    assert "fold must be in 0..2" in capsys.readouterr().err
    assert run(_parse(["classify", "--dataset", "trec", "--fold", "1", "--data-dir", str(data_dir)])) == 2


# ---- early stopping (every task) ------------------------------------------------------------------
@pytest.fixture
def sst_dir(tmp_path, monkeypatch):
    rng = random.Random(1)
    root = tmp_path / "sst-data"
    for split, n in (("train", 24), ("dev", 8), ("test", 8)):
        _write(monkeypatch, root, f"sst/binary.{split}.txt", _lines(rng, n).replace("caf\xe9", "x").encode())
    return root


def _valid_scores(monkeypatch, scores):
    """Make the validation accuracy of epoch e be scores[e − 1] (the test split is scored 0.5)."""
    calls = []

    def evaluate(self, split):
        if split == "test":
            return {"loss": 1.0, "acc": 0.5}
        calls.append(split)
        return {"loss": 1.0, "acc": scores[len(calls) - 1]}

    monkeypatch.setattr(loop._SST, "evaluate", evaluate)


def sst_run(sst_dir, out, **changes):
    base = dict(cell="sru", hidden=4, embedding=4, layers=1, epochs=6, batch_size=8, data_dir=str(sst_dir),
                out=str(out), progress=False, verbose=False)
    base.update(changes)
    return base


def test_patience_stops_after_n_epochs_without_a_better_score(sst_dir, tmp_path, monkeypatch):
    _valid_scores(monkeypatch, [0.6, 0.7, 0.65, 0.7, 0.6, 0.9])
    results = train_sst(sst_run(sst_dir, tmp_path / "p2", patience=2))
    assert [e["epoch"] for e in results["epochs"]] == [1, 2, 3, 4] and results["best_epoch"] == 2
    assert results["status"] == "completed" and results["test"] is not None

    _valid_scores(monkeypatch, [0.6, 0.7, 0.65, 0.7, 0.6, 0.9])
    assert len(train_sst(sst_run(sst_dir, tmp_path / "none"))["epochs"]) == 6  # no patience: every epoch
    _valid_scores(monkeypatch, [0.6, 0.7, 0.65, 0.7, 0.6, 0.9])
    assert len(train_sst(sst_run(sst_dir, tmp_path / "p3", patience=3))["epochs"]) == 5


def test_a_resumed_run_that_ran_out_of_patience_trains_no_more(sst_dir, tmp_path, monkeypatch):
    _valid_scores(monkeypatch, [0.7, 0.6, 0.6])
    first = train_sst(sst_run(sst_dir, tmp_path / "r", patience=2, epochs=3))
    assert len(first["epochs"]) == 3
    _valid_scores(monkeypatch, [0.99])  # would be a new best, if an epoch ran
    again = train_sst(sst_run(sst_dir, tmp_path / "r", patience=2, epochs=10, resume=True))
    assert len(again["epochs"]) == 3 and again["status"] == "completed"
    _valid_scores(monkeypatch, [0.5, 0.5])  # patience may change on resume: two epochs more, no better
    longer = train_sst(sst_run(sst_dir, tmp_path / "r", patience=4, epochs=10, resume=True))
    assert len(longer["epochs"]) == 5 and longer["best_epoch"] == 1
    with pytest.raises(ValueError, match="patience must be at least 1"):
        train_sst(sst_run(sst_dir, tmp_path / "bad", patience=0))


def test_the_sst_preset_stops_early():
    from minirec.training import PRESETS

    assert PRESETS["sst"]["sst"]["patience"] == 2 and PRESETS["classify"]["paper"]["patience"] == 3


# ---- the real files (skipped without ../shared/data) ----------------------------------------------
@pytest.mark.skipif(not (REAL_DATA / "classify").is_dir(), reason="no ../shared/data/classify")
@pytest.mark.parametrize("dataset, sizes", [
    ("mr", {0: 5331, 1: 5331}), ("subj", {0: 5000, 1: 5000}), ("cr", {0: 1366, 1: 2405}),
    ("mpqa", {0: 7292, 1: 3311}), ("trec", None),
])
def test_real_files_load_with_their_labels(dataset, sizes):
    fold = None if dataset == "trec" else 0
    corpus = load_classify(dataset, REAL_DATA, fold=fold)
    labels = Counter(e.label for part in (corpus.train, corpus.dev, corpus.test) for e in part)
    if sizes is None:  # TREC: 5,452 + 500 questions over 6 classes
        assert sum(labels.values()) == 5952 and set(labels) == set(range(6)) and len(corpus.test) == 500
    else:
        assert labels == sizes
        assert abs(len(corpus.test) - sum(sizes.values()) / 10) <= 1
    assert DATASETS[dataset][1] == corpus.num_classes


def test_speed_benchmark_prints_its_table():
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "classify_speed.py"
    done = subprocess.run([sys.executable, str(script), "--cells", "sru,lstm", "--steps", "1", "--rounds", "1",
                           "--vocab", "50", "--length", "4"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"sru", "lstm"} and rows["sru"][2] == "1.00" and float(rows["lstm"][0]) > 0


@pytest.mark.skipif(not (REAL_DATA / "classify").is_dir(), reason="no ../shared/data/classify")
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_every_real_set_trains(dataset):
    fold = 0 if dataset in CV_DATASETS else None
    results = train_classify(dataset=dataset, fold=fold, cell="sru", hidden=8, embedding=8, layers=1, epochs=1,
                             max_batches=2, data_dir=str(REAL_DATA), progress=False, verbose=False)
    assert results["status"] == "completed"
    if fold is None:
        assert 0 <= results["test"]["acc"] <= 1
    else:
        assert results["folds"] == 10 and len(results["runs"]) == 1


def test_classify_speed_writes_its_rows_as_json(tmp_path):
    # the speed column of the Table 1 analogue is read back from this file by chapter 9
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "classify_speed.py"
    spec = importlib.util.spec_from_file_location("classify_speed", path)
    speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(speed)
    out = tmp_path / "speed.json"
    speed.main(["--quick", "--cells", "sru,lstm", "--length", "3", "--vocab", "40", "--epoch-steps", "7",
                "--json", str(out)])
    record = json.loads(out.read_text())
    assert [row["cell"] for row in record["rows"]] == ["sru", "lstm"]
    assert record["rows"][0]["vs_first"] == 1.0
    for row in record["rows"]:
        assert row["ms_per_step"] > 0 and row["s_per_epoch"] == pytest.approx(row["ms_per_step"] * 7 / 1000)
    assert record["settings"]["vocab"] == 40 and "numpy" in record["machine"]
