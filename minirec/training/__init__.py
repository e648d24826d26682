"""Training: ``minirec train ptb|sst [options]`` and, from Python, `train_ptb` / `train_sst`.

    minirec train ptb --preset small --cell lstm --out runs/small-lstm
    minirec train ptb --out runs/small-lstm --resume          # continue after Ctrl-C
    minirec train sst --cell sru --out runs/sst-sru
    minirec train sst --levels fofe,sgu,gru --chunk-size 8     # the hierarchical classifier

    from minirec.training import train_ptb
    results = train_ptb({"cell": "sru", "epochs": 1, "max_batches": 50})

Options left out take the preset's value, then the task's default (`presets`). ``--out DIR``
receives ``checkpoint.npz`` (to resume), ``best.npz`` (the best-validation model),
``results.json`` and ``curves.png``, and holds ``run.lock`` while a run uses it (`rundir`).
Exit status: 0 completed, 1 diverged (NaN/inf) or failed (a file could not be written, out of
memory), 2 could not start, 130 interrupted by Ctrl-C, 143 by SIGTERM (a checkpoint was saved in
both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from .loop import BEST, CHECKPOINT, CURVES, RESULTS, TrainingError, _train, machine_info, train, train_ptb, train_sst
from .presets import DEFAULTS, PRESETS, RUNTIME_KEYS, learning_rate, resolve_config
from .sample import sample  # (the function; the module is minirec.training.sample in sys.modules)

__all__ = [
    "add_arguments", "run", "train", "train_ptb", "train_sst", "machine_info", "resolve_config", "learning_rate",
    "TrainingError", "sample", "DEFAULTS", "PRESETS", "RUNTIME_KEYS", "CHECKPOINT", "BEST", "RESULTS", "CURVES",
]

EXIT_CODES = {"completed": 0, "diverged": 1, "failed": 1, "interrupted": 130}
SIGTERM_EXIT = 143  # 128 + 15, the shell's convention


def _cell_option(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of ``minirec train``. Every default is None: "not given" (see `presets`)."""
    parser.add_argument("task", choices=sorted(DEFAULTS),
                        help="ptb: language model; sst: sentiment classifier; chars: Tiny Shakespeare by "
                             "characters; classify: the SRU paper's sets")
    presets = ", ".join(f"{task}: {'/'.join(PRESETS[task])}" for task in PRESETS)
    parser.add_argument("--preset", help=f"published settings ({presets})")
    model = parser.add_argument_group("model")
    model.add_argument("--cell", help="recurrent cell (see `minirec info`); default lstm")
    model.add_argument("--cell-option", dest="cell_options", action="append", type=_cell_option, metavar="KEY=VALUE",
                       help="a cell option, e.g. alpha=0.7 for fofe (repeatable; VALUE parsed as JSON if it can be)")
    model.add_argument("--layers", type=int, help="recurrent layers")
    model.add_argument("--hidden", type=int, help="hidden size (per direction)")
    model.add_argument("--embedding", type=int, help="embedding size")
    model.add_argument("--dropout", type=float, help="dropout on non-recurrent connections")
    model.add_argument("--word-dropout", type=float,
                       help="drop whole word vectors with this probability while training (sst)")
    model.add_argument("--bidirectional", action=argparse.BooleanOptionalAction, default=None,
                       help="bidirectional layers (sst)")
    model.add_argument("--tie-weights", action=argparse.BooleanOptionalAction, default=None,
                       help="decoder shares the embedding table (ptb; needs embedding == hidden)")
    model.add_argument("--init-range", type=float, help="draw every parameter from U(±R) (0: each layer's own init)")
    model.add_argument("--pooling", choices=["last", "max"], help="sentence pooling (sst)")
    model.add_argument("--sst-kind", choices=["binary", "fine"], help="SST-2 or SST-5 (sst)")
    model.add_argument("--levels", help="hierarchical classifier cells bottom-up, e.g. fofe,sgu,gru (sst)")
    model.add_argument("--chunk-size", type=int, help="words per bottom-level chunk (with --levels)")
    classify = parser.add_argument_group("classify (the SRU paper's Table 1 sets; training/classify.py)")
    classify.add_argument("--dataset", choices=["mr", "subj", "cr", "mpqa", "trec", "sst2", "sst5"])
    classify.add_argument("--folds", type=int, help="cross-validation folds, fixed by --seed (mr/subj/cr/mpqa; 10)")
    classify.add_argument("--fold", type=int, help="run only fold K (0-based), into OUT/fold-K")
    classify.add_argument("--summary", action="store_true", default=None,
                          help="train nothing: merge the folds finished in --out into OUT/summary.json")
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--epochs", type=int)
    opt.add_argument("--patience", type=int, help="stop after N epochs without a better validation score")
    opt.add_argument("--batch-size", type=int)
    opt.add_argument("--eval-batch-size", type=int, help="batch size for valid/test (default: --batch-size)")
    opt.add_argument("--bptt", type=int, help="truncated BPTT window (ptb)")
    opt.add_argument("--lr", type=float, help="learning rate")
    opt.add_argument("--lr-decay", type=float, help="lr factor per epoch after --decay-after epochs")
    opt.add_argument("--decay-after", type=int, help="epochs at the full learning rate")
    opt.add_argument("--clip", type=float, help="max global gradient norm (0: no clipping)")
    opt.add_argument("--optimizer", choices=["sgd", "adam"])
    opt.add_argument("--weight-decay", type=float)
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--device", choices=["cpu", "gpu"])
    run_group.add_argument("--seed", type=int, help="same seed, same numbers (on the same machine)")
    run_group.add_argument("--data-dir", help="directory holding ptb/*.txt or sst/*.txt (else the cache/download)")
    run_group.add_argument("--out", help="run directory (default runs/TASK-CELL-TIME)")
    run_group.add_argument("--resume", action="store_true", default=None, help="continue the checkpoint in --out")
    run_group.add_argument("--max-batches", type=int, help="cap training batches per epoch (quick runs)")
    run_group.add_argument("--max-eval-batches", type=int, help="cap evaluation batches (default: --max-batches)")
    run_group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                           help="progress bar (default: only on a terminal)")
    run_group.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return parser


def _config_from_args(args) -> tuple[str, dict]:
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("command", "task", "quiet", "process_exits")}
    if "cell_options" in given:
        given["cell_options"] = dict(given["cell_options"])
    if getattr(args, "quiet", False):
        given["verbose"] = False
    if "out" not in given and not given.get("resume"):
        label = given.get("levels", "").replace(",", "-") or given.get("cell") or DEFAULTS[args.task]["cell"]
        given["out"] = f"runs/{args.task}-{label}-{time.strftime('%Y%m%d-%H%M%S')}"
    return args.task, given


def run(args) -> int:
    """``minirec train``: returns the exit status (see the module docstring)."""
    from minirec.data import DataError

    task, given = _config_from_args(args)
    try:
        if task == "classify":
            from .classify import run_classify

            results = run_classify(given)
        else:
            # (a process that ends after the run keeps SIGINT/SIGTERM ignored once it has stopped)
            results = _train(task, given, exiting=getattr(args, "process_exits", False))
    except (TrainingError, DataError, ValueError, FileNotFoundError) as error:
        print(f"minirec train: error: {error}", file=sys.stderr)
        return 2
    except MemoryError as error:  # building the model or loading the data
        print(f"minirec train: error: out of memory before training started ({error or 'MemoryError'}); lower "
              "--hidden, --embedding, --batch-size or --bptt", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # before the loop's handling: loading data, building the model
        print("minirec train: interrupted before training started: nothing to save", file=sys.stderr)
        return EXIT_CODES["interrupted"]
    status = results["status"]
    if status == "completed" and results.get("out"):
        print(f"minirec: results in {results['out']}/{RESULTS}", file=sys.stderr)
    if status == "interrupted" and results.get("signal") == "SIGTERM":
        return SIGTERM_EXIT
    return EXIT_CODES.get(status, 1)
