"""Training configurations: the defaults of each task, the published presets, and how a run's
configuration is put together.

A configuration is a plain dict (it goes into checkpoints and results.json as JSON). Its value
for a key comes from, in increasing priority: the task's defaults, the ``preset``, then what the
caller gave (command-line options or the dict passed to `train_ptb` / `train_sst`). A key given
as None counts as not given.

Learning-rate schedule: ``lr · lr_decay ** max(epoch − decay_after, 0)`` for epochs 1, 2, …
(Zaremba's small model: lr 1 for 4 epochs, then halved each epoch).
"""

from __future__ import annotations

import copy
import math
import numbers

__all__ = ["TASKS", "DEFAULTS", "PRESETS", "RUNTIME_KEYS", "resolve_config", "resume_config", "learning_rate"]

TASKS = ("ptb", "sst", "chars", "classify")

_COMMON = {
    "cell": "lstm",
    "cell_options": {},
    "layers": 2,
    "hidden": 200,
    "embedding": 200,
    "dropout": 0.0,
    "bidirectional": False,
    "epochs": 13,
    "batch_size": 20,
    "eval_batch_size": None,  # None: batch_size
    "lr": 1.0,
    "lr_decay": 1.0,
    "decay_after": 0,
    "clip": 5.0,  # global gradient-norm clip; 0 or None: no clipping
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "init_range": None,  # None (or 0): each layer's own init; R > 0: every parameter from U(±R)
    "device": "cpu",
    "seed": 0,
    "data_dir": None,
    "out": None,  # None: nothing is written (the best model is kept in memory)
    "resume": False,
    "patience": None,  # stop after this many epochs without a better validation score; None: never
    "max_batches": None,  # cap on training batches per epoch (smoke tests, quick mode)
    "max_eval_batches": None,  # cap on evaluation batches; None: max_batches
    "preset": None,
    "progress": None,  # tqdm bar: None = only when stderr is a terminal
    "verbose": True,  # one summary line per epoch on stderr
}

#: The defaults of each task: PTB as Zaremba's small model, SST as the ``sst`` preset.
DEFAULTS = {
    "ptb": {
        **_COMMON,
        "task": "ptb",
        "bptt": 35,
        "tie_weights": False,
        "init_range": 0.1,
        "lr_decay": 0.5,
        "decay_after": 4,
    },
    "sst": {
        **_COMMON,
        "task": "sst",
        "sst_kind": "binary",
        "embedding": 300,
        "hidden": 150,
        "bidirectional": True,
        "optimizer": "adam",
        "lr": 1e-3,
        "dropout": 0.5,
        "batch_size": 32,
        "epochs": 10,
        "pooling": "max",
        "word_dropout": 0.0,  # drop whole word vectors (nn.WordDropout)
        "levels": None,  # e.g. ["fofe", "sgu", "gru"]: a HierarchicalClassifier instead
        "chunk_size": 8,
    },
    # Tiny Shakespeare by characters; an "epoch" is an evaluation interval of max_batches windows
    # (training/chars.py). The defaults are the ``cpu`` preset.
    "chars": {
        **_COMMON,
        "task": "chars",
        "bptt": 64,
        "tie_weights": False,
        "layers": 2, "hidden": 256, "embedding": 128, "batch_size": 32, "optimizer": "adam", "lr": 3e-3,
        "clip": 1.0, "epochs": 16, "max_batches": 50, "max_eval_batches": 8, "lr_decay": 0.9, "decay_after": 8,
    },
    # The SRU paper's Table 1 sets (training/classify.py): MR, SUBJ, CR, MPQA, TREC, SST.
    "classify": {
        **_COMMON,
        "task": "classify",
        "dataset": None,  # mr | subj | cr | mpqa | trec | sst2 | sst5
        "folds": None,  # cross-validation folds (None: 10 for the sets without a split)
        "fold": None,  # run this fold only (None: every fold)
        "dev_fraction": 0.1,  # of the training part, where a set has no dev split
        "embedding": 300,
        "hidden": 128,
        "optimizer": "adam",
        "lr": 1e-3,
        "dropout": 0.5,
        "batch_size": 32,
        "epochs": 30,
        "patience": 3,
        "pooling": "max",
        "word_dropout": 0.0,
    },
}

PRESETS = {
    "ptb": {
        # Zaremba, Sutskever & Vinyals 2014, "small": 2 x 200, no dropout, test ppl 114.5 (LSTM).
        # Two departures from their main.lua, as the project's specification set it: bptt 35 (theirs
        # unrolls 20), and the halving starts with epoch 5 (their loop halves after the validation of
        # each epoch past the 4th, so from epoch 6).
        "small": {
            "layers": 2, "hidden": 200, "embedding": 200, "bptt": 35, "batch_size": 20,
            "optimizer": "sgd", "lr": 1.0, "clip": 5.0, "init_range": 0.1, "lr_decay": 0.5,
            "decay_after": 4, "epochs": 13, "dropout": 0.0,
        },
        # "medium": 2 x 650, dropout 0.5 on non-recurrent connections, test ppl 82.7 (LSTM).
        "medium": {
            "layers": 2, "hidden": 650, "embedding": 650, "bptt": 35, "batch_size": 20,
            "optimizer": "sgd", "lr": 1.0, "clip": 5.0, "init_range": 0.05, "lr_decay": 1 / 1.2,
            "decay_after": 6, "epochs": 39, "dropout": 0.5,
        },
    },
    "sst": {
        # Random 300-d embeddings, 2-layer bidirectional RNN of 150 per direction, max pooling.
        "sst": {
            "embedding": 300, "layers": 2, "hidden": 150, "bidirectional": True, "optimizer": "adam",
            "lr": 1e-3, "dropout": 0.5, "batch_size": 32, "epochs": 10, "pooling": "max", "clip": 5.0,
            "patience": 2,  # results/sst-binary-sru.json peaked at epoch 3 of 10
        },
    },
    "classify": {
        # SRU paper, section 4.1: 2 layers of 128, Adam at 1e-3, batch 32, dropout 0.5. Departures: random
        # 300-d embeddings, trained (theirs: fixed word2vec), max pooling over time (theirs: the last state).
        "paper": {
            "embedding": 300, "layers": 2, "hidden": 128, "bidirectional": False, "optimizer": "adam", "lr": 1e-3,
            "dropout": 0.5, "batch_size": 32, "epochs": 30, "patience": 3, "pooling": "max", "clip": 5.0,
        },
    },
}
PRESETS["sst"]["default"] = PRESETS["sst"]["sst"]
PRESETS["chars"] = {
    # About 4.5 minutes on an idle 2-core CPU (results/README.md has the measured times).
    "cpu": {key: DEFAULTS["chars"][key] for key in ("layers", "hidden", "embedding", "batch_size", "bptt", "lr",
                                                   "lr_decay", "decay_after", "epochs", "max_batches",
                                                   "max_eval_batches")},
    # The minGRU paper's size (Feng et al. 2024: 3 layers x 384, nanoGPT's setup), for a GPU.
    "paper": {
        "layers": 3, "hidden": 384, "embedding": 384, "batch_size": 64, "bptt": 256, "lr": 1e-3,
        "dropout": 0.2, "epochs": 50, "max_batches": 100, "max_eval_batches": 10, "lr_decay": 0.95,
        "decay_after": 20,
    },
}
PRESETS["classify"]["default"] = PRESETS["classify"]["paper"]

#: Keys a resumed run may change; every other key keeps the checkpoint's value.
RUNTIME_KEYS = ("epochs", "patience", "device", "data_dir", "out", "resume", "progress", "verbose")


def _given(config) -> dict:
    """The keys a caller set: a dict, an argparse Namespace or None; None values dropped."""
    if config is None:
        return {}
    if not isinstance(config, dict):
        config = vars(config)
    return {k: v for k, v in config.items() if v is not None}


def resolve_config(task: str, config=None) -> dict:
    """The full configuration of a run of ``task`` from what the caller gave (see the module
    docstring). Unknown keys and unknown presets are errors that list the known ones."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; use one of {TASKS}")
    given = _given(config)
    given.pop("task", None)
    unknown = sorted(set(given) - set(DEFAULTS[task]))
    if unknown:
        raise ValueError(f"unknown configuration keys for {task}: {unknown}; known: {sorted(DEFAULTS[task])}")
    resolved = copy.deepcopy(DEFAULTS[task])
    preset = given.get("preset")
    if preset is not None:
        if preset not in PRESETS[task]:
            raise ValueError(f"unknown preset {preset!r} for {task}; known presets: {sorted(PRESETS[task])}")
        resolved.update(copy.deepcopy(PRESETS[task][preset]))
    resolved.update(copy.deepcopy(given))
    if resolved.get("init_range") is not None:
        if float(resolved["init_range"]) < 0:
            raise ValueError(f"init_range must be >= 0 (0: each layer's own init), got {resolved['init_range']}")
        if float(resolved["init_range"]) == 0:
            resolved["init_range"] = None
    if isinstance(resolved.get("levels"), str):
        text = resolved["levels"]
        resolved["levels"] = [c.strip() for c in text.split(",") if c.strip()]
        if not resolved["levels"]:  # (was silently the flat classifier)
            raise ValueError(f"levels={text!r} names no cell: give them bottom-up, e.g. fofe,sgu,gru")
    if resolved.get("levels"):
        # The hierarchy names its own cells and depth: a flat-RNN option given beside it would be
        # recorded in results.json without having been used.
        flat_keys = ("cell", "cell_options", "layers", "bidirectional")
        unused = sorted(key for key in flat_keys if key in given and given[key] != DEFAULTS[task][key])
        if unused:
            raise ValueError(f"{unused} do not apply with levels={resolved['levels']} (the hierarchical classifier)")
        resolved.update({key: None for key in flat_keys})  # what results.json records was used
    _validate(resolved)
    return resolved


def resume_config(stored: dict, config=None) -> tuple[dict, list[str]]:
    """The configuration of a resumed run: the checkpoint's, with the runtime keys the caller
    gave (`RUNTIME_KEYS`). Returns it and a note for each other key given with a different value
    (those are ignored: the checkpoint was trained with its own)."""
    given = _given(config)
    merged = copy.deepcopy(stored)
    notes = []
    for key, value in given.items():
        if key in RUNTIME_KEYS:
            merged[key] = value
        elif key in stored and stored[key] != value and key != "task":
            notes.append(f"{key}={value!r} ignored on resume: the checkpoint was trained with {stored[key]!r}")
    merged["resume"] = True
    return merged, notes


def learning_rate(config: dict, epoch: int) -> float:
    """The learning rate of ``epoch`` (1-based) under the configuration's schedule."""
    decay = 1.0 if config.get("lr_decay") is None else config["lr_decay"]
    return float(config["lr"]) * float(decay) ** max(epoch - int(config.get("decay_after") or 0), 0)


def _validate(config: dict) -> None:
    # Types first: NaN passes every comparison below (nan < 0 is False), and 3.5 or "200" would be
    # rounded or fail later without naming the option.
    for key in ("lr", "lr_decay", "clip", "weight_decay", "init_range", "dropout", "word_dropout"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)
                                  or not math.isfinite(value)):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
    for key in ("layers", "hidden", "embedding", "epochs", "batch_size", "bptt", "chunk_size", "eval_batch_size",
                "max_batches", "max_eval_batches", "seed", "decay_after"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
            raise ValueError(f"{key} must be a whole number, got {value!r}")
    positive = ("layers", "hidden", "embedding", "epochs", "batch_size")
    for key in positive:
        if config[key] is not None and int(config[key]) < 1:  # (None: layers of a hierarchy)
            raise ValueError(f"{key} must be at least 1, got {config[key]}")
    for key in ("bptt", "chunk_size", "eval_batch_size", "max_batches", "max_eval_batches", "patience"):
        if config.get(key) is not None and int(config[key]) < 1:
            raise ValueError(f"{key} must be at least 1, got {config[key]}")
    if not 0 <= float(config["dropout"]) < 1:
        raise ValueError(f"dropout must be in [0, 1), got {config['dropout']}")
    if not 0 <= float(config.get("word_dropout") or 0.0) < 1:
        raise ValueError(f"word_dropout must be in [0, 1), got {config['word_dropout']}")
    if config["optimizer"] not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config['optimizer']!r}")
    if float(config["lr"]) <= 0:
        raise ValueError(f"lr must be > 0, got {config['lr']}")
    if config.get("lr_decay") is not None and float(config["lr_decay"]) <= 0:
        raise ValueError(f"lr_decay must be > 0 (1: no decay), got {config['lr_decay']}")
    for key in ("clip", "weight_decay", "seed", "decay_after"):  # clip 0: no clipping
        if config.get(key) is not None and float(config[key]) < 0:
            raise ValueError(f"{key} must be >= 0, got {config[key]}")
    if config["task"] in ("ptb", "chars") and config.get("bidirectional"):
        raise ValueError("bidirectional applies to sst only: a language model reads left to right")
    if config["device"] not in ("cpu", "gpu"):
        raise ValueError(f"device must be 'cpu' or 'gpu', got {config['device']!r}")
    if config["task"] in ("sst", "classify") and config["pooling"] not in ("last", "max"):
        raise ValueError(f"pooling must be 'last' or 'max', got {config['pooling']!r}")
    if not config.get("levels") and not isinstance(config.get("cell_options"), dict):
        raise ValueError(f"cell_options must be a dict, got {config.get('cell_options')!r}")
