"""The degradation problem (ResNet paper, Fig. 6): plain nets get worse with depth, residual nets get better.

Example:
    >>> [run.label for run in runs(BUDGETS["fast"])]
    ['plain-20', 'plain-56', 'resnet-20', 'resnet-56']
"""

from __future__ import annotations

from pathlib import Path

from resnets.reproduce.runner import Budget, Result, Run, error_curves, error_table, save_figure
from resnets.train.plots import pyplot

TITLE = "The degradation problem: plain-20/56 against resnet-20/56 on CIFAR-10 (ResNet paper, Fig. 6)"


def runs(budget: Budget) -> list[Run]:
    return [
        Run("plain-20", "plain20", paper_error="Fig. 6 only"),
        Run("plain-56", "plain56", paper_error="Fig. 6 only"),
        Run("resnet-20", "resnet20", paper_error="8.75"),
        Run("resnet-56", "resnet56", paper_error="6.97"),
    ]


def report(results: list[Result], out: Path) -> str:
    by_label = {result.run.label: result for result in results}
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for axis, family in zip(axes, ("plain", "resnet"), strict=True):
        for depth, color in ((20, "tab:orange"), (56, "tab:red")):
            error_curves(axis, by_label[f"{family}-{depth}"], color, f"{family}-{depth}")
        axis.set(
            title={"plain": "plain nets", "resnet": "residual nets"}[family], xlabel="iteration", ylabel="error (%)"
        )
        axis.grid(alpha=0.3)
        axis.legend(title="bold: validation, dashed: training")
    save_figure(figure, out.parent / f"{out.name}.png")

    table = error_table(results)
    plain20, plain56 = by_label["plain-20"], by_label["plain-56"]
    res20, res56 = by_label["resnet-20"], by_label["resnet-56"]
    degraded = plain56.train_error > plain20.train_error
    improved = res56.train_error < res20.train_error and res56.val_error < res20.val_error
    reading = [
        f"- Plain nets: plain-56 ends with {plain56.train_error:.2f}% training error against plain-20's "
        f"{plain20.train_error:.2f}% (validation {plain56.val_error:.2f}% against {plain20.val_error:.2f}%): "
        + ("the deeper plain net is worse, the degradation problem." if degraded else "no degradation at this budget."),
        f"- Residual nets: resnet-56 ends with {res56.train_error:.2f}% training error against resnet-20's "
        f"{res20.train_error:.2f}% (validation {res56.val_error:.2f}% against {res20.val_error:.2f}%): "
        + (
            "the deeper residual net is better."
            if improved
            else "depth does not help yet at this budget: the deeper net starts slower, and the paper's ordering "
            "needs a longer schedule (`--iterations`, or `--budget paper` on a GPU)."
        ),
        "- Training error is measured on the augmented mini-batches since the previous point (the paper's thin "
        "curves); validation error on the held-out images.",
    ]
    return "\n".join([f"![degradation](../{out.name}.png)", "", table, "", "Reading:", "", *reading])
