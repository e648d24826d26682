"""The training loop shared by PTB (language modelling) and SST (sentence classification).

One run, `train(task, config)`:

1. resolve the configuration (`presets`), or on ``resume`` take the checkpoint's;
2. seed everything (`minirec.backend.manual_seed`, and the NumPy generator that shuffles SST),
   load the data, build the model and the optimiser (the same seed gives the same numbers);
3. per epoch: set the scheduled learning rate, train with a tqdm bar (loss, perplexity or
   accuracy, tokens/s), evaluate on the validation split, keep the best model (``best.npz``),
   write the checkpoint (``checkpoint.npz``) and ``results.json``;
4. at the end, evaluate the test split with the best-validation model and draw ``curves.png``.

Exact resumption. At the start of epoch e the dropout generators are re-seeded from
(seed, e), and the SST shuffling generator's state is saved with the epoch: a run resumed from
an end-of-epoch checkpoint repeats exactly what the uninterrupted run would have done. A
checkpoint taken mid-epoch (Ctrl-C) also stores the batch position, the NumPy dropout
generator's state, the carried hidden state (PTB) and the epoch's running sums, so it resumes
exactly too on the CPU (CuPy's generator state is not saved: a GPU run resumed mid-epoch draws
different dropout masks for the rest of that epoch).

Stopping (`signals`). The first Ctrl-C or SIGTERM (when running in the main thread) lets the
current batch finish, then saves a checkpoint and returns with status "interrupted"; a second one
aborts at once, except inside a state update (an optimiser step and its bookkeeping, the
end-of-epoch records and files), which it lets finish first, so that what is saved is always one
consistent state; the last complete batch is saved. Once the run saves and reports, signals are
ignored. An interrupt during the final test evaluation stops it at once and saves nothing (the
weights in memory are then the best epoch's, not the last): the checkpoint of the last epoch is
kept, and ``--resume`` runs the test again. A loss or gradient norm that is NaN or inf stops the
run (status "diverged") with a message naming the epoch and batch; the last good checkpoint is
left as it was. A write that fails (disk full) or a MemoryError stops it with status "failed",
keeping the last good checkpoint. The run directory is locked for the run's life (`rundir`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import sys
import time
import zipfile
from itertools import islice
from pathlib import Path

import numpy as np

from minirec import backend
from minirec.autograd import ops
from minirec.autograd.function import no_grad
from minirec.kernels import check_kind, kernel_mode
from minirec.nn import SGD, Adam, clip_grad_norm

from .chars import CharTask
from .checkpoint import flatten_state, load_checkpoint, save_checkpoint, unflatten_state, write_json_atomic
from .presets import RUNTIME_KEYS, learning_rate, resolve_config, resume_config
from .rundir import RunDirectory, TrainingError, WriteFailed, writing
from .signals import StopSignals

__all__ = ["train", "train_ptb", "train_sst", "machine_info", "TrainingError", "CHECKPOINT", "BEST", "RESULTS",
           "CURVES"]

CHECKPOINT, BEST, RESULTS, CURVES = "checkpoint.npz", "best.npz", "results.json", "curves.png"


class _Diverged(Exception):
    pass


# ---- the two tasks ------------------------------------------------------------------------------
@contextlib.contextmanager
def _naming_cell_options(config):
    """A cell that does not take a given option raises TypeError (an unexpected keyword), one
    given a value of the wrong type a TypeError from its check (alpha=abc: '<' between int and
    str): say which option and which cell."""
    try:
        yield
    except TypeError as error:
        if not config["cell_options"]:
            raise
        raise ValueError(f"cell options {config['cell_options']} not accepted by {config['cell']!r}: {error}") from None


class _PTB:
    """Word-level language modelling: windows of ``bptt`` steps, the state carried across them."""

    metric, higher_is_better = "ppl", False

    def __init__(self, config):
        from minirec.data import batchify, load_ptb
        from minirec.models import LanguageModel

        self.config = config
        corpus = load_ptb(config["data_dir"])
        self.vocab_size = len(corpus.vocab)
        self.outputs = (self.vocab_size, "words")  # what the softmax chooses among
        eval_batch = config["eval_batch_size"] or config["batch_size"]
        self.train_data = batchify(corpus.train, config["batch_size"])
        self.eval_data = {"valid": batchify(corpus.valid, eval_batch), "test": batchify(corpus.test, eval_batch)}
        with _naming_cell_options(config):
            self.model = LanguageModel(
                self.vocab_size, cell=config["cell"], embedding_size=config["embedding"],
                hidden_size=config["hidden"], num_layers=config["layers"], dropout=config["dropout"],
                tie_weights=config["tie_weights"], init_range=config["init_range"], **config["cell_options"],
            )

    def n_train_batches(self):
        from minirec.data import n_windows

        n = n_windows(self.train_data, self.config["bptt"])
        return min(n, self.config["max_batches"] or n)

    def train_batches(self, skip):
        from minirec.data import bptt_batches

        return islice(bptt_batches(self.train_data, self.config["bptt"]), skip, self.n_train_batches())

    def step(self, batch, carry):
        inputs, targets = batch
        loss, new_carry = self.model.loss(inputs, targets, carry)
        # Zaremba et al. (and the TensorFlow PTB model) take the gradient of the loss summed over the
        # bptt time steps and averaged over the batch; lr 1 and clip 5 of the presets assume that scale.
        stats = {"count": inputs.size, "tokens": inputs.size, "grad_scale": inputs.shape[0]}
        return loss, self.model.detach_state(new_carry), stats

    def evaluate(self, split):
        from minirec.data import bptt_batches

        cap = self.config["max_eval_batches"] or self.config["max_batches"]
        total, count, state = 0.0, 0, None
        self.model.eval()
        try:
            with no_grad():
                for inputs, targets in islice(bptt_batches(self.eval_data[split], self.config["bptt"]), cap):
                    loss, state = self.model.loss(inputs, targets, state)
                    total += float(loss.item()) * inputs.size
                    count += inputs.size
        finally:
            self.model.train()
        return self.summary(total, count, 0)

    @staticmethod
    def summary(loss_sum, count, correct):
        loss = loss_sum / max(count, 1)
        return {"loss": loss, "ppl": _safe_exp(loss)}


class _SST:
    """Sentence classification over padded, length-bucketed batches (shuffled with a seeded
    NumPy generator, whose state is checkpointed)."""

    metric, higher_is_better = "acc", True

    def __init__(self, config):
        from minirec.data import load_sst
        from minirec.models import HierarchicalClassifier, SentenceClassifier

        self.config = config
        self.corpus = load_sst(config["sst_kind"], config["data_dir"])
        self.vocab_size = len(self.corpus.vocab)
        self.outputs = (self.corpus.num_classes, "classes")
        self.data_rng = np.random.default_rng(config["seed"])
        common = dict(embedding_size=config["embedding"], hidden_size=config["hidden"], dropout=config["dropout"],
                      pooling=config["pooling"], init_range=config["init_range"],
                      word_dropout=config.get("word_dropout") or 0.0)
        if config.get("levels"):
            self.model = HierarchicalClassifier(
                self.vocab_size, self.corpus.num_classes, levels=config["levels"], chunk_size=config["chunk_size"],
                **common,
            )
        else:
            with _naming_cell_options(config):
                self.model = SentenceClassifier(
                    self.vocab_size, self.corpus.num_classes, cell=config["cell"], num_layers=config["layers"],
                    bidirectional=config["bidirectional"], **common, **config["cell_options"],
                )

    def n_train_batches(self):
        from minirec.data import SSTBatches

        n = len(SSTBatches(self.corpus.train, self.config["batch_size"]))
        return min(n, self.config["max_batches"] or n)

    def train_batches(self, skip):
        from minirec.data import bucket_batches

        batches = bucket_batches(self.corpus.train, self.config["batch_size"], shuffle=True, rng=self.data_rng)
        return islice(batches, skip, self.n_train_batches())

    def _forward(self, batch):
        logits = self.model(batch.tokens, batch.mask)
        labels = backend.to_device(batch.labels, self.model.device)
        loss = ops.cross_entropy(logits, labels)
        correct = int((logits.data.argmax(axis=-1) == labels).sum())
        return loss, correct

    def step(self, batch, carry):
        loss, correct = self._forward(batch)
        return loss, None, {"count": len(batch.labels), "tokens": int(batch.lengths.sum()), "correct": correct}

    def evaluate(self, split):
        from minirec.data import bucket_batches

        examples = self.corpus.dev if split == "valid" else self.corpus.test
        cap = self.config["max_eval_batches"] or self.config["max_batches"]
        eval_batch = self.config["eval_batch_size"] or self.config["batch_size"]
        total, count, correct = 0.0, 0, 0
        self.model.eval()
        try:
            with no_grad():
                for batch in islice(bucket_batches(examples, eval_batch, shuffle=False), cap):
                    loss, right = self._forward(batch)
                    total += float(loss.item()) * len(batch.labels)
                    count += len(batch.labels)
                    correct += right
        finally:
            self.model.train()
        return self.summary(total, count, correct)

    @staticmethod
    def summary(loss_sum, count, correct):
        return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1)}


def _classify(config):  # training/classify.py builds on _SST: imported once this module is complete
    from .classify import Classify

    return Classify(config)


_TASKS = {"ptb": _PTB, "sst": _SST, "chars": CharTask, "classify": _classify}


def _warn_if_worse_than_uniform(epoch, train_loss, n, what):
    """A loss that stays finite can still diverge: an epoch whose mean training loss is above that
    of a uniform guess (ln n, with 10 % slack for the first batches) is not learning. Measured:
    minGRU and SGU at the small PTB preset's lr 1 end epoch 1 at training perplexity 12,000 and
    79,000 over 10,000 words; at lr 0.3 they train (results/README.md)."""
    if train_loss > math.log(1.1 * n):
        print(f"minirec: warning: epoch {epoch} trained worse than a uniform guess over the {n:,} {what} "
              f"(mean training loss {train_loss:.3f} > ln {n:,} = {math.log(n):.3f}): the run is diverging; "
              "lower the learning rate (--lr)", file=sys.stderr, flush=True)


def _safe_exp(x):
    return math.exp(x) if x < 700 else math.inf


# ---- helpers ------------------------------------------------------------------------------------
def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), where platform.processor() is empty."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def machine_info(device: str = "cpu") -> dict:
    """Where a run happened: platform, Python and library versions, CPU count, device."""
    info = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or _cpu_model(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "device": device,
        # what picks the kernels and how many threads the CPU work may use
        "kernels": kernel_mode(),
        "threads": {name: os.environ.get(name) for name in ("OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")
                    if os.environ.get(name)},
    }
    try:
        import numba

        info["numba"] = numba.__version__
    except Exception:  # numba is optional at run time
        info["numba"] = None
    if device == "gpu":
        cupy = backend._cupy()
        info["cupy"] = getattr(cupy, "__version__", None)
        with contextlib.suppress(Exception):
            name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
            info["gpu"] = name.decode() if isinstance(name, bytes) else str(name)
    return info


def _model_label(config) -> str:
    levels = config.get("levels")
    return "hierarchical " + "/".join(levels) if levels else config["cell"]


def _epoch_seed(seed: int, epoch: int) -> int:
    """The dropout seed of an epoch: a function of (seed, epoch) only."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0])


def _make_optimizer(config, params):
    if config["optimizer"] == "adam":
        return Adam(params, lr=config["lr"], weight_decay=config["weight_decay"])
    return SGD(params, lr=config["lr"], weight_decay=config["weight_decay"])


def _grad_norm(params) -> float:
    return clip_grad_norm(params, math.inf)  # the norm alone (never clips): one host read for all gradients


def _log(config, message):
    if config.get("verbose", True):
        print(message, file=sys.stderr, flush=True)


def _progress_bar(config, total, epoch):
    from tqdm.auto import tqdm

    progress = config.get("progress")
    disable = None if progress is None else not progress  # None: only on a terminal
    return tqdm(total=total, desc=f"epoch {epoch}/{config['epochs']}", unit="batch", disable=disable,
                leave=False, file=sys.stderr, dynamic_ncols=True)


# ---- the run ------------------------------------------------------------------------------------
class _Run:
    def __init__(self, task, config, on_batch=None):
        self.task_name = task
        self.on_batch = on_batch
        given = config
        resolved = resolve_config(task, given)
        if resolved["out"] is not None and not str(resolved["out"]).strip():
            raise TrainingError("--out is empty: name a run directory (from Python, out=None writes nothing)")
        self.out = Path(resolved["out"]) if resolved["out"] else None
        # held from here to the end of the run: no second run or resume in this directory meanwhile
        self.run_dir = None if self.out is None else RunDirectory.open(self.out, (CHECKPOINT, BEST, RESULTS, CURVES))
        try:
            self._setup(task, given, resolved)
        except BaseException:
            self.close()
            raise

    def close(self):
        """Release the run directory (its lock)."""
        if self.run_dir is not None:
            self.run_dir.close()
            self.run_dir = None

    def _setup(self, task, given, resolved):
        for note in [] if self.run_dir is None else self.run_dir.notes:  # (even with --quiet: files changed)
            print(f"minirec: {note}", file=sys.stderr, flush=True)
        checkpoint = None
        if resolved["resume"]:
            if self.out is None:
                raise TrainingError("resume needs the run's directory: pass out=DIR (--out DIR)")
            if not (self.out / CHECKPOINT).is_file():
                raise TrainingError(f"nothing to resume: no {CHECKPOINT} in {self.out}")
            checkpoint = _load_training_checkpoint(self.out / CHECKPOINT)
            stored = checkpoint.meta["config"]
            if stored.get("task") != task:
                raise TrainingError(f"{self.out / CHECKPOINT} is a {stored.get('task')} checkpoint, not {task}")
            resolved, notes = resume_config(stored, given)
            for note in notes:
                _log(resolved, f"minirec: {note}")
        elif self.out is not None:
            # A fresh run never writes over another run's files, checkpoint or not.
            present = [name for name in (CHECKPOINT, BEST, RESULTS) if (self.out / name).exists()]
            if CHECKPOINT in present:
                raise TrainingError(
                    f"{self.out} already holds a checkpoint ({CHECKPOINT}); pass --resume (resume=True) to "
                    "continue it, or choose another --out"
                )
            if present:
                raise TrainingError(f"{self.out} already holds another run ({', '.join(present)}); choose another "
                                    "--out (or delete those files)")
        self.config = config = resolved
        if config["device"] == "gpu" and not backend.cuda_available():
            raise TrainingError("device 'gpu' requested but CUDA is not usable here (no CuPy or no GPU)")
        try:  # MINIREC_KERNELS: a forced kind that cannot run fails here, not at the first batch
            check_kind()
        except (RuntimeError, ValueError) as error:
            raise TrainingError(str(error)) from error

        backend.manual_seed(config["seed"])
        try:
            self.task = _TASKS[task](config)
        except MemoryError as error:
            raise TrainingError(f"out of memory loading the data or building the model ({error or 'MemoryError'}); "
                                "lower --hidden, --embedding or --layers") from error
        self.model = self.task.model.to(config["device"])
        self.params = self.model.parameters()
        self.optimizer = _make_optimizer(config, self.params)
        self.parameter_count = self.model.count_parameters()

        # Progress: completed epochs, and within the current one.
        self.epochs_done = 0
        self.batches_done = 0
        self.in_epoch = False  # between an epoch's first batch and its record in the history
        self.sums = self._zero_sums()
        self.carry = None
        self.train_time = 0.0
        self.history = []
        self.best = None  # {"epoch", metric, "loss"}
        self.best_state = None  # in-memory best weights when there is no out directory
        self.total_time = 0.0
        self.epoch_data_state = None  # the SST shuffling generator at the start of the current epoch
        self.dropout_state = None  # numpy dropout generator after the last complete batch
        self.testing = False  # the epochs are done; the model may hold the best epoch's weights
        if checkpoint is not None:
            try:
                self._restore(checkpoint)
            except (KeyError, ValueError, TypeError) as error:
                raise TrainingError(f"{self.out / CHECKPOINT} does not fit the model its configuration builds "
                                    f"({type(error).__name__}: {error})") from error
            self._check_run_files()

    # ---- state ---------------------------------------------------------------------------------
    @staticmethod
    def _zero_sums():
        return {"loss": 0.0, "count": 0, "correct": 0, "tokens": 0}

    def _data_rng(self):
        return getattr(self.task, "data_rng", None)

    def _meta(self) -> dict:
        mid_epoch = self.in_epoch
        meta = {
            "task": self.task_name,
            "config": self.config,
            "epochs_done": self.epochs_done,
            "in_epoch": mid_epoch,
            "batches_done": self.batches_done if mid_epoch else 0,
            "history": self.history,
            "best": self.best,
            "total_time_s": self.total_time,
            "vocab_size": self.task.vocab_size,
            "parameters": self.parameter_count,
        }
        data_rng = self._data_rng()
        if data_rng is not None:
            # mid-epoch: the state the epoch started from (its batch order is redrawn, then skipped)
            meta["data_rng"] = self.epoch_data_state if mid_epoch else data_rng.bit_generator.state
        if mid_epoch:
            meta["sums"] = self.sums
            meta["train_time_s"] = self.train_time
            meta["dropout_rng"] = self.dropout_state
        return meta

    def _save_checkpoint(self):
        """Write checkpoint.npz: at an epoch's end, or mid-epoch (``in_epoch``) with the position."""
        if self.out is None:
            return None
        extra = {}
        meta = self._meta()
        if self.in_epoch and self.carry is not None:
            structure, extra = flatten_state(self.carry)
            meta["carry"] = structure
        with writing(self.out / CHECKPOINT):
            return save_checkpoint(self.out / CHECKPOINT, self.model.state_dict(), self.optimizer.state_dict(), meta,
                                   extra)

    def _restore(self, checkpoint):
        meta = checkpoint.meta
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.epochs_done = int(meta["epochs_done"])
        self.in_epoch = bool(meta.get("in_epoch", False))
        self.batches_done = int(meta.get("batches_done", 0))
        self.history = list(meta.get("history", []))
        self.best = meta.get("best")
        self.total_time = float(meta.get("total_time_s", 0.0))
        if meta.get("data_rng") is not None:
            self.task.data_rng.bit_generator.state = meta["data_rng"]
        if self.in_epoch:
            self.sums = dict(meta["sums"])
            self.train_time = float(meta.get("train_time_s", 0.0))
            self.dropout_state = meta.get("dropout_rng")
            if meta.get("carry") is not None:
                self.carry = unflatten_state(meta["carry"], checkpoint.extra, self.config["device"])
        if self.best is not None and self.out is not None:
            if not (self.out / BEST).is_file():
                self.best = None  # the best model's file is gone: start the comparison afresh
            else:  # the file is the truth about which epoch's weights the test will use
                self.best = _load_training_checkpoint(self.out / BEST, need=("best",)).meta["best"]
        _log(self.config, f"minirec: resuming {self.out / CHECKPOINT} at epoch {self.epochs_done + 1}"
             + (f", batch {self.batches_done + 1}" if self.in_epoch else ""))

    def _check_run_files(self):
        """On resume, before any work: best.npz and results.json must be this run's (another run's
        best model would only fail at the final test, after every epoch)."""
        def run_identity(config):
            return {k: v for k, v in (config or {}).items() if k not in RUNTIME_KEYS}

        ours = run_identity(self.config)
        advice = "move it away (or choose another --out) and resume again"
        best_path, results_path = self.out / BEST, self.out / RESULTS
        if best_path.is_file():
            best = _load_training_checkpoint(best_path, need=("best", "config"))
            if run_identity(best.meta["config"]) != ours:
                different = sorted(k for k in set(ours) | set(run_identity(best.meta["config"]))
                                   if ours.get(k) != best.meta["config"].get(k))
                raise TrainingError(f"{best_path} belongs to another run (its configuration differs in {different}); "
                                    + advice)
            current = self.model.state_dict()
            try:
                self.model.load_state_dict(best.model)
            except (KeyError, ValueError, TypeError) as error:
                raise TrainingError(f"{best_path} does not fit this run's model ({error}); {advice}") from error
            finally:
                self.model.load_state_dict(current)
        if results_path.is_file():
            try:
                recorded = json.loads(results_path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:
                raise TrainingError(f"{results_path} is not readable JSON ({error}); {advice}") from error
            if not isinstance(recorded, dict) or run_identity(recorded.get("config")) != ours:
                raise TrainingError(f"{results_path} belongs to another run (its configuration differs); {advice}")

    def _parameters_finite(self) -> bool:
        return all(bool(backend.get_xp(p.data).isfinite(p.data).all()) for p in self.params)

    def _is_better(self, metrics) -> bool:
        if self.best is None:
            return True
        key = self.task.metric
        if self.task.higher_is_better:
            return metrics[key] > self.best[key] or (metrics[key] == self.best[key]
                                                     and metrics["loss"] < self.best["loss"])
        return metrics[key] < self.best[key]

    def _out_of_patience(self) -> bool:
        """Early stopping: ``patience`` epochs have passed without a better validation score."""
        patience = self.config.get("patience")
        if not patience or self.best is None or self.epochs_done - self.best["epoch"] < patience:
            return False
        _log(self.config, f"minirec: early stop after epoch {self.epochs_done}: no better valid "
             f"{self.task.metric} in {patience} epochs (best epoch {self.best['epoch']})")
        return True

    def _save_best(self, epoch, metrics):
        best = {"epoch": epoch, "loss": metrics["loss"], self.task.metric: metrics[self.task.metric]}
        if self.out is None:
            self.best_state = self.model.state_dict()
        else:
            with writing(self.out / BEST):
                save_checkpoint(self.out / BEST, self.model.state_dict(), meta={"best": best, "config": self.config})
        self.best = best  # only once the file holds these weights

    def _load_best(self) -> bool:
        if self.out is not None and (self.out / BEST).is_file():
            self.model.load_state_dict(load_checkpoint(self.out / BEST).model)
            return True
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            return True
        return False

    # ---- results -------------------------------------------------------------------------------
    def results(self, status, message=None, test=None) -> dict:
        return {
            "task": self.task_name,
            "status": status,
            "message": message,
            "config": self.config,
            "epochs": self.history,
            "best_epoch": None if self.best is None else self.best["epoch"],
            "best_valid": self.best,
            "test": test,
            "parameters": self.parameter_count,
            "vocab_size": self.task.vocab_size,
            "time_s": self.total_time,
            "machine": machine_info(self.config["device"]),
            "out": None if self.out is None else str(self.out),
        }

    def _write_results(self, results, plot: bool):
        if self.out is None:
            return
        with writing(self.out / RESULTS):
            write_json_atomic(self.out / RESULTS, results)
        if plot:
            from .plots import plot_curves

            try:
                title = f"{self.task_name} · {_model_label(self.config)}"
                with writing(self.out / CURVES):
                    plot_curves(self.history, self.out / CURVES, title=title)
            except WriteFailed as error:  # the figure is a convenience: results.json holds the numbers
                print(f"minirec: warning: {error}", file=sys.stderr, flush=True)

    # ---- training ------------------------------------------------------------------------------
    def _train_epoch(self, epoch):
        config, task = self.config, self.task
        self.optimizer.lr = learning_rate(config, epoch)
        self.model.train()
        resuming = self.in_epoch
        backend.manual_seed(_epoch_seed(config["seed"], epoch))
        if not resuming:
            # (dropout_state too: a checkpoint taken before this epoch's first batch ends must not
            # carry the previous epoch's generator over this epoch's seed)
            self.sums, self.carry, self.train_time, self.dropout_state = self._zero_sums(), None, 0.0, None
        elif self.dropout_state is not None:
            backend.rng(np).bit_generator.state = self.dropout_state
        # (a resumed SST run had its shuffling generator set back to this epoch's start by _restore)
        data_rng = self._data_rng()
        self.epoch_data_state = None if data_rng is None else data_rng.bit_generator.state
        self.in_epoch = True
        batches = task.train_batches(self.batches_done)
        total = task.n_train_batches()
        clip = config["clip"]
        bar = _progress_bar(config, total, epoch)
        bar.update(self.batches_done)
        try:
            start = time.perf_counter()
            for batch in batches:
                index = self.batches_done + 1
                try:
                    loss, carry, stats = task.step(batch, self.carry)
                except ValueError as error:  # a cell refuses NaN/inf inputs (overflowed activations)
                    if "NaN" not in str(error) and self._parameters_finite():
                        raise
                    raise _Diverged(f"non-finite values in the forward pass at epoch {epoch}, batch {index} "
                                    f"({error})") from error
                self.optimizer.zero_grad()
                (loss * float(stats.get("grad_scale", 1))).backward()
                # read the loss once the backward is queued: on a GPU the wait overlaps its work
                loss_value = float(loss.item())
                if not math.isfinite(loss_value):
                    raise _Diverged(f"non-finite loss ({loss_value}) at epoch {epoch}, batch {index}")
                norm = clip_grad_norm(self.params, clip) if clip else _grad_norm(self.params)
                if not math.isfinite(norm):
                    raise _Diverged(f"non-finite gradient norm ({norm}) at epoch {epoch}, batch {index}")
                with self.sigint.protected():  # the weights and the recorded position move together
                    self.optimizer.step()
                    self.carry = carry
                    self.batches_done = index
                    sums = self.sums
                    sums["loss"] += loss_value * stats["count"]
                    sums["count"] += stats["count"]
                    sums["correct"] += stats.get("correct", 0)
                    sums["tokens"] += stats["tokens"]
                    self.dropout_state = backend.rng(np).bit_generator.state
                now = time.perf_counter()
                self.train_time += now - start
                start = now
                if not bar.disable:
                    shown = task.summary(sums["loss"], sums["count"], sums["correct"])
                    bar.set_postfix({
                        "loss": f"{shown['loss']:.3f}",
                        task.metric: f"{shown[task.metric]:.4g}",
                        "tok/s": f"{sums['tokens'] / max(self.train_time, 1e-9):.0f}",
                    }, refresh=False)
                    bar.update(1)
                if self.on_batch is not None:
                    self.on_batch(epoch, index, loss_value)
                self.sigint.check()
        finally:
            bar.close()

    def run(self, exiting=False) -> dict:
        config, task = self.config, self.task
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
        _log(config, f"minirec: training {self.task_name} with {_model_label(config)} "
             f"({self.parameter_count:,} parameters) on {config['device']}")
        run_start = time.perf_counter()
        time_before = self.total_time
        epoch = self.epochs_done + 1
        with StopSignals(exiting) as self.sigint:
            try:
                for epoch in range(self.epochs_done + 1, config["epochs"] + 1):
                    if self._out_of_patience():  # checked before an epoch, so a resumed run stops too
                        break
                    self._train_epoch(epoch)
                    if not self._parameters_finite():
                        raise _Diverged(f"non-finite parameters after the last batch of epoch {epoch}")
                    valid = task.evaluate("valid")
                    train = task.summary(self.sums["loss"], self.sums["count"], self.sums["correct"])
                    record = {"epoch": epoch, "lr": self.optimizer.lr}
                    record.update({f"train_{k}": v for k, v in train.items()})
                    record.update({f"valid_{k}": v for k, v in valid.items()})
                    record["train_time_s"] = self.train_time
                    record["tokens_per_s"] = self.sums["tokens"] / max(self.train_time, 1e-9)
                    record["batches"] = self.batches_done
                    with self.sigint.protected():
                        self.history.append(record)
                        self.epochs_done, self.batches_done, self.in_epoch = epoch, 0, False
                        if self._is_better(valid):
                            self._save_best(epoch, valid)
                        self.total_time = time_before + time.perf_counter() - run_start
                        self._save_checkpoint()
                        self._write_results(self.results("running"), plot=False)
                    metric = task.metric
                    _log(config, f"epoch {epoch:3d} | lr {record['lr']:.4g} | train {metric} "
                         f"{record[f'train_{metric}']:.4g} | valid {metric} {record[f'valid_{metric}']:.4g} | "
                         f"{record['tokens_per_s']:.0f} tok/s | {self.train_time:.1f} s")
                    _warn_if_worse_than_uniform(epoch, record["train_loss"], *task.outputs)
                    self.sigint.check()  # Ctrl-C during the evaluation: stop here, all saved
                test = None
                self.testing = self.sigint.immediate = True  # nothing to save from here: a signal stops at once
                self.sigint.check()
                if self._load_best():
                    test = task.evaluate("test")
                    split = test.get("split", "test")  # chars: no test split, the whole valid text
                    what = "test" if split == "test" else f"whole {split} text"
                    score = f"{task.metric} {test[task.metric]:.4g}"
                    _log(config, f"{what} {score} (best valid epoch {self.best['epoch']})")
                self.sigint.wind_down()
                self.total_time = time_before + time.perf_counter() - run_start
                results = self.results("completed", test=test)
            except _Diverged as error:
                self.sigint.wind_down()
                where = (f"the last good checkpoint ({self.out / CHECKPOINT}) is kept"
                         if self.out is not None and (self.out / CHECKPOINT).is_file() else "no checkpoint was written")
                message = f"{error}: stopping; {where}"
                print(f"minirec: {message}", file=sys.stderr, flush=True)
                self.total_time = time_before + time.perf_counter() - run_start
                results = self.results("diverged", message)
            except KeyboardInterrupt:
                self.sigint.wind_down()
                self.total_time = time_before + time.perf_counter() - run_start
                message = self._on_interrupt(epoch)
                if self.sigint.name == "SIGTERM":
                    message = "SIGTERM: " + message
                print(f"minirec: {message}", file=sys.stderr, flush=True)
                results = self.results("interrupted", message)
                results["signal"] = self.sigint.name or "SIGINT"
            except (WriteFailed, MemoryError) as error:
                self.sigint.wind_down()
                self.total_time = time_before + time.perf_counter() - run_start
                results = self.results("failed", self._on_failure(epoch, error))
            try:
                self._write_results(results, plot=True)
            except WriteFailed as error:
                print(f"minirec: {error}; the status above is not recorded", file=sys.stderr, flush=True)
        return results

    def _kept(self) -> str:
        """Which checkpoint on disk a stopped run leaves."""
        path = None if self.out is None else self.out / CHECKPOINT
        if path is None or not path.is_file():
            return "no checkpoint was written"
        try:
            meta = load_checkpoint(path).meta
        except (OSError, ValueError):
            return f"{path} is kept"
        where = f"batch {meta['batches_done']} of epoch {meta['epochs_done'] + 1}" if meta.get("in_epoch") \
            else f"epoch {meta.get('epochs_done')}"
        return f"the last good checkpoint ({path}, after {where}) is kept (continue with --resume)"

    def _on_failure(self, epoch, error) -> str:
        if isinstance(error, MemoryError):
            what = (f"out of memory in epoch {epoch} ({error or 'MemoryError'}): lower --batch-size, --bptt or "
                    "--hidden")
        else:
            what = f"{error} in epoch {epoch}"
        message = f"{what}; stopping: {self._kept()}"
        print(f"minirec: {message}", file=sys.stderr, flush=True)
        return message

    def _on_interrupt(self, epoch) -> str:
        if self.out is None:
            return f"interrupted in epoch {epoch}; nothing saved (no --out directory)"
        if self.testing:
            return (f"interrupted during the test evaluation; the checkpoint after epoch {self.epochs_done} "
                    f"({self.out / CHECKPOINT}) is kept (--resume runs the test again)")
        if not self._parameters_finite():  # the last step diverged: such weights are no place to resume from
            kept = (f"the previous checkpoint ({self.out / CHECKPOINT}) is kept" if (self.out / CHECKPOINT).is_file()
                    else "no checkpoint was written")
            return f"interrupted in epoch {epoch}, but the weights are no longer finite: {kept}"
        try:
            path = self._save_checkpoint()
        except WriteFailed as error:
            return f"interrupted in epoch {epoch}, but the checkpoint could not be saved ({error}): {self._kept()}"
        if not self.in_epoch:
            return f"interrupted after epoch {self.epochs_done}; checkpoint saved to {path} (continue with --resume)"
        return (f"interrupted in epoch {epoch} after batch {self.batches_done}; checkpoint saved to {path} "
                f"(continue with --resume)")


def _load_training_checkpoint(path, need=("config", "epochs_done")):
    """`load_checkpoint`, with a `TrainingError` naming the file when it is damaged or is not a
    checkpoint of a training run (``need``: the meta keys it must have)."""
    try:
        checkpoint = load_checkpoint(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise TrainingError(f"{path} is not a readable minirec checkpoint ({type(error).__name__}: {error})") from error
    missing = [key for key in need if key not in checkpoint.meta]
    if missing:
        raise TrainingError(f"{path} is not a training checkpoint (its metadata lacks {missing})")
    return checkpoint


def train(task: str, config=None, *, on_batch=None, **overrides) -> dict:
    """Train on ``task`` ("ptb" or "sst") and return the results dict (also written to
    ``out/results.json`` when ``out`` is set). ``config`` is a dict of configuration keys
    (`presets.DEFAULTS`), ``overrides`` more of them; the command line builds one from its
    options. ``on_batch(epoch, batch, loss)`` is called after every training batch (for tests
    and monitoring)."""
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict of configuration keys, got {type(config).__name__}")
    given = {} if config is None else dict(config)
    given.update(overrides)
    return _train(task, given, on_batch=on_batch)


def _train(task, given, on_batch=None, exiting=False):
    """``exiting``: the process ends after this run (the command line), so SIGINT and SIGTERM
    stay ignored after it instead of turning a finished run into a traceback."""
    run = _Run(task, given, on_batch=on_batch)
    try:
        return run.run(exiting=exiting)
    finally:
        run.close()


def train_ptb(config=None, *, on_batch=None, **overrides) -> dict:
    """Train a language model on PTB (see `train`); the defaults are Zaremba's small model."""
    return train("ptb", config, on_batch=on_batch, **overrides)


def train_sst(config=None, *, on_batch=None, **overrides) -> dict:
    """Train a sentence classifier on SST (see `train`); the defaults are the ``sst`` preset."""
    return train("sst", config, on_batch=on_batch, **overrides)
