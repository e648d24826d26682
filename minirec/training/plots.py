"""Learning curves as a PNG, drawn with Matplotlib's object API on the Agg canvas (no pyplot,
no display, no global backend switch)."""

from __future__ import annotations

from pathlib import Path

from .checkpoint import atomic_write

__all__ = ["plot_curves", "curve_panels"]


def curve_panels(history: list[dict]) -> list[tuple[str, str, bool]]:
    """(metric, axis label, log scale) for each panel: one per metric the run recorded (chars has
    no accuracy, SST no bits per character)."""
    candidates = [("ppl", "perplexity", True)] if history and "train_ppl" in history[0] else [
        ("loss", "loss (nats)", False), ("acc", "accuracy", False), ("bpc", "bits per character", False)]
    return [panel for panel in candidates
            if any(h.get(f"{split}_{panel[0]}") is not None for h in history for split in ("train", "valid"))]


def plot_curves(history: list[dict], path, title: str = "") -> Path | None:
    """Draw per-epoch metrics, train vs valid: perplexity (PTB); loss and accuracy (SST, classify);
    loss and bits per character (chars).

    ``history`` is the ``epochs`` list of a results dict. Writes atomically; returns the path,
    or None when there is no epoch or no metric to draw.
    """
    if not history:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    epochs = [h["epoch"] for h in history]
    panels = curve_panels(history)
    if not panels:
        return None
    figure = Figure(figsize=(5 * len(panels), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    for i, (key, label, log_scale) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), i)
        for split, style in (("train", "o-"), ("valid", "s-")):
            values = [h.get(f"{split}_{key}") for h in history]
            if any(v is not None for v in values):
                axes.plot(epochs, values, style, label=split, markersize=3)
        if log_scale:
            axes.set_yscale("log")
            plain = FuncFormatter(lambda value, _: f"{value:g}")
            axes.yaxis.set_major_formatter(plain)
            axes.yaxis.set_minor_formatter(plain)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(label)
        axes.grid(True, alpha=0.3)
        axes.legend()
    if title:
        figure.suptitle(title)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=100)
    return Path(path)
