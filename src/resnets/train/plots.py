"""Figures of a run: loss, train/val error and learning rate per epoch, from its metrics.jsonl.

Example:
    >>> plot_run("runs/r20")  # writes runs/r20/curves.png
"""

from __future__ import annotations

import os
from pathlib import Path

from resnets.atomic import save_figure
from resnets.train.run_folder import RunFolder

PLOTTED = ("epoch", "lr", "train_loss", "train_top1")  # what each record must hold
VALIDATED = ("val_loss", "val_top1")  # what a run with a hold-out adds (--val-fraction 0 trains on every image)


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """A run's metrics records, oldest first (read through its RunFolder)."""
    return RunFolder(run_dir).metrics()


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend: figures are written, never shown (no display here)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Three panels side by side (validation curves where the run held images out); returns the PNG's path."""
    if out is not None and Path(out).is_dir():
        raise ValueError(f"--out {out}: is a folder; name the PNG to write")
    rows = read_metrics(run_dir)  # at least one record, each a JSON object (RunFolder refuses the rest)
    for number, row in enumerate(rows, start=1):
        needed = PLOTTED + (VALIDATED if any(key in row for key in VALIDATED) else ())
        missing = [key for key in needed if key not in row]
        if missing:
            metrics_file = RunFolder(run_dir).metrics_path
            raise ValueError(f"{metrics_file}: record {number} lacks {', '.join(missing)}; not a resnets metrics file")
    plt = pyplot()
    epochs = [r["epoch"] for r in rows]
    figure, (loss_ax, error_ax, lr_ax) = plt.subplots(1, 3, figsize=(15, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in rows], label="train")
    if all("train_cross_entropy" in row for row in rows):  # distilled: the part with the labels alone
        loss_ax.plot(epochs, [r["train_cross_entropy"] for r in rows], "--", label="train, cross-entropy")
    validated = all(key in row for row in rows for key in VALIDATED)
    if validated:
        loss_ax.plot(epochs, [r["val_loss"] for r in rows], label="validation")
    loss_ax.set(title="loss", xlabel="epoch")
    error_ax.plot(epochs, [100 * (1 - r["train_top1"]) for r in rows], label="train")
    if validated:
        error_ax.plot(epochs, [100 * (1 - r["val_top1"]) for r in rows], label="validation")
    error_ax.set(title="top-1 error (%)", xlabel="epoch")
    lr_ax.plot(epochs, [r["lr"] for r in rows])
    lr_ax.set(title="learning rate (end of epoch)", xlabel="epoch")
    for axis in (loss_ax, error_ax):
        axis.legend()
        axis.grid(alpha=0.3)
    lr_ax.grid(alpha=0.3)
    figure.suptitle(str(run_dir))
    figure.tight_layout()
    return save_figure(figure, Path(out) if out else Path(run_dir) / "curves.png")
