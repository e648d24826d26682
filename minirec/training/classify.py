"""The task ``classify``: the SRU paper's sentence-classification sets, with cross-validation.

    minirec train classify --dataset trec --cell sru --out runs/trec-sru        # TREC's own split
    minirec train classify --dataset mr --cell sru --out runs/mr-sru            # 10 folds, one by one
    minirec train classify --dataset mr --cell sru --out runs/mr-sru --fold 3   # one fold (parallel runs)
    minirec train classify --dataset mr --out runs/mr-sru --resume              # finish what is missing
    minirec train classify --out runs/mr-sru --summary                          # merge the finished folds

A set without a split (mr, subj, cr, mpqa) runs ``--folds`` folds (default 10), each a complete
run of the loop in ``OUT/fold-K/`` (checkpoint, best model, results.json); after each fold the
finished ones are merged into ``OUT/summary.json``: mean ± sample standard deviation of the test
accuracy, the per-fold numbers and the training time per epoch. trec, sst2 and sst5 have their
own test set: one run in ``OUT``, as for the other tasks.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from minirec.data.classify import CV_DATASETS, DATASETS, DEFAULT_FOLDS, load_classify

from .loop import _SST, RESULTS, _log, _naming_cell_options, machine_info, train
from .presets import resolve_config

__all__ = ["Classify", "SUMMARY", "train_classify", "summarise", "check_classify_config"]

SUMMARY = "summary.json"
_FOLD_DIR = "fold-{}"


def check_classify_config(config: dict) -> None:
    """The classify-only keys: a known dataset; folds and fold only where there are folds."""
    dataset = config.get("dataset")
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)} (--dataset), got {dataset!r}")
    if not 0 < float(config.get("dev_fraction", 0.1)) < 1:
        raise ValueError(f"dev_fraction must be in (0, 1), got {config['dev_fraction']}")
    folds, fold = config.get("folds"), config.get("fold")
    if dataset not in CV_DATASETS:
        if folds is not None or fold is not None:
            raise ValueError(f"{dataset} has its own test set: --folds/--fold apply to {', '.join(CV_DATASETS)}")
        return
    folds = DEFAULT_FOLDS if folds is None else int(folds)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if fold is not None and not 0 <= int(fold) < folds:
        raise ValueError(f"fold must be in 0..{folds - 1} (with {folds} folds), got {fold}")


class Classify(_SST):
    """`_SST`'s batches, steps and evaluation over `load_classify`'s corpus of one fold."""

    def __init__(self, config):
        from minirec.models import SentenceClassifier

        check_classify_config(config)
        self.config = config
        folds = config["folds"] or DEFAULT_FOLDS
        self.corpus = load_classify(config["dataset"], config["data_dir"], fold=config["fold"], folds=folds,
                                    seed=config["seed"], dev_fraction=config["dev_fraction"])
        self.vocab_size = len(self.corpus.vocab)
        self.outputs = (self.corpus.num_classes, "classes")
        self.data_rng = np.random.default_rng(config["seed"])
        with _naming_cell_options(config):
            self.model = SentenceClassifier(
                self.vocab_size, self.corpus.num_classes, cell=config["cell"], num_layers=config["layers"],
                bidirectional=config["bidirectional"], embedding_size=config["embedding"],
                hidden_size=config["hidden"], dropout=config["dropout"], pooling=config["pooling"],
                init_range=config["init_range"], word_dropout=config.get("word_dropout") or 0.0,
                **config["cell_options"],
            )


def _fold_results(path: Path) -> dict | None:
    try:
        return json.loads((path / RESULTS).read_text())
    except (OSError, ValueError):
        return None


def summarise(out) -> dict:
    """Merge the folds finished in ``out`` (``fold-K/results.json`` with status completed) into
    ``out/summary.json`` and return it. Unfinished or missing folds are listed, not counted."""
    out = Path(out)
    runs = {}
    for fold_dir in sorted(out.glob("fold-*")):
        results = _fold_results(fold_dir)
        if results is not None and results.get("task") == "classify":
            runs[int(results["config"]["fold"])] = results
    if not runs:
        raise FileNotFoundError(f"no fold results in {out} (expected {out}/fold-K/{RESULTS})")
    first = next(iter(runs.values()))["config"]
    folds = first["folds"] or DEFAULT_FOLDS
    for results in runs.values():  # folds of one cross-validation only
        for key in ("dataset", "cell", "seed", "folds", "hidden", "layers"):
            if results["config"][key] != first[key]:
                raise ValueError(f"{out} mixes runs: {key} is {first[key]!r} in one fold, "
                                 f"{results['config'][key]!r} in fold {results['config']['fold']}")
    per_fold = []
    for fold, results in sorted(runs.items()):
        epochs = results["epochs"]
        per_fold.append({
            "fold": fold,
            "status": results["status"],
            "test_acc": None if results.get("test") is None else results["test"]["acc"],
            "best_valid_acc": None if results.get("best_valid") is None else results["best_valid"]["acc"],
            "best_epoch": results.get("best_epoch"),
            "epochs": len(epochs),
            "time_s": results["time_s"],
            "epoch_time_s": _mean([e["train_time_s"] for e in epochs]),
        })
    done = [f for f in per_fold if f["status"] == "completed" and f["test_acc"] is not None]
    accuracies = [f["test_acc"] for f in done]
    summary = {
        "task": "classify",
        "dataset": first["dataset"],
        "cell": first["cell"],
        "folds": folds,
        "completed": [f["fold"] for f in done],
        "missing": [k for k in range(folds) if k not in {f["fold"] for f in done}],
        "test_acc_mean": _mean(accuracies),
        "test_acc_std": _std(accuracies),
        "epoch_time_s": _mean([f["epoch_time_s"] for f in done if f["epoch_time_s"] is not None]),
        "time_s": sum(f["time_s"] for f in per_fold),
        "per_fold": per_fold,
        "config": {k: v for k, v in first.items() if k not in ("fold", "out", "resume")},
        # the machine the folds ran on (the first fold's record), not the one merging them
        "machine": next(iter(runs.values())).get("machine") or machine_info(first["device"]),
    }
    from .checkpoint import write_json_atomic

    write_json_atomic(out / SUMMARY, summary)
    return summary


def _mean(values):
    return sum(values) / len(values) if values else None


def _std(values):
    """The sample standard deviation (n − 1); None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = _mean(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def describe(summary: dict) -> str:
    """One line: dataset, cell, mean ± std over the finished folds."""
    mean, std = summary["test_acc_mean"], summary["test_acc_std"]
    accuracy = "no finished fold" if mean is None else f"test acc {100 * mean:.1f}" + (
        "" if std is None else f" ± {100 * std:.1f}") + " %"
    return (f"{summary['dataset']} · {summary['cell']}: {accuracy} over {len(summary['completed'])}/"
            f"{summary['folds']} folds")


def train_classify(config=None, *, on_batch=None, **overrides) -> dict:
    """Train on ``config["dataset"]``: one run for a set with its own test set (its results), or
    the requested folds of a cross-validation, each in ``out/fold-K`` (the summary, with
    ``status`` the worst of this call's runs: interrupted stops at once, diverged goes on)."""
    given = {} if config is None else dict(config)
    given.update(overrides)
    resolved = resolve_config("classify", given)
    check_classify_config(resolved)
    if resolved["dataset"] not in CV_DATASETS:
        return train("classify", given, on_batch=on_batch)
    folds = resolved["folds"] or DEFAULT_FOLDS
    todo = range(folds) if resolved["fold"] is None else [int(resolved["fold"])]
    out = None if resolved["out"] is None else Path(resolved["out"])
    status, fold_results = "completed", []
    for fold in todo:
        fold_given = {**given, "folds": folds, "fold": fold}
        if out is not None:
            fold_out = out / _FOLD_DIR.format(fold)
            fold_given["out"] = str(fold_out)
            previous = _fold_results(fold_out)
            if resolved["resume"] and previous is not None and previous["status"] == "completed":
                _log(resolved, f"minirec: fold {fold} already completed ({fold_out / RESULTS})")
                continue
            # --resume continues the folds that have a checkpoint and starts the others
            fold_given["resume"] = bool(resolved["resume"]) and (fold_out / "checkpoint.npz").is_file()
        _log(resolved, f"minirec: {resolved['dataset']} fold {fold} of {folds}")
        results = train("classify", fold_given, on_batch=on_batch)
        fold_results.append(results)
        if results["status"] != "completed":
            status = results["status"] if status == "completed" else status
        if results["status"] == "interrupted":
            break
    if out is None:  # nothing on disk to merge: summarise this call's folds in memory
        accuracies = [r["test"]["acc"] for r in fold_results if r["status"] == "completed"]
        return {"status": status, "dataset": resolved["dataset"], "folds": folds, "test_acc_mean": _mean(accuracies),
                "test_acc_std": _std(accuracies), "runs": fold_results}
    summary = summarise(out)
    _log(resolved, f"minirec: {describe(summary)}; summary in {out / SUMMARY}")
    return {**summary, "status": status}


def run_classify(given: dict) -> dict:
    """``minirec train classify`` (with ``--summary``: merge only, train nothing)."""
    if given.pop("summary", False):
        summary = summarise(given["out"])
        print(describe(summary), file=sys.stdout)
        return {**summary, "status": "completed"}
    return train_classify(given)
