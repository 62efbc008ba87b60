"""Deeper residual nets on CIFAR-10 (ResNet paper, Table 6): resnet-20 to resnet-110 (and 1202 at the paper budget).

Example:
    >>> [run.label for run in runs(BUDGETS["fast"])]
    ['resnet-20', 'resnet-32', 'resnet-44', 'resnet-56']
"""

from __future__ import annotations

from pathlib import Path

from resnets.reproduce.runner import Budget, Result, Run, error_curves, error_table, save_figure
from resnets.train.plots import pyplot

TITLE = "Depth: CIFAR-10 residual nets from 20 to 1202 layers (ResNet paper, Table 6)"
PAPER_ERROR = {20: "8.75", 32: "7.51", 44: "7.17", 56: "6.97", 110: "6.43", 1202: "7.93"}


def runs(budget: Budget) -> list[Run]:
    return [Run(f"resnet-{depth}", f"resnet{depth}", paper_error=PAPER_ERROR[depth]) for depth in budget.depths]


def report(results: list[Result], out: Path) -> str:
    plt = pyplot()
    figure, (curves, by_depth) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("viridis")
    for index, result in enumerate(results):
        error_curves(curves, result, colors(index / max(1, len(results) - 1)), result.run.label)
    curves.set(title="error against iterations", xlabel="iteration", ylabel="error (%)")
    curves.legend(title="bold: validation, dashed: training")
    layers = [r.layers for r in results]
    by_depth.errorbar(
        layers,
        [r.val_error for r in results],
        yerr=[r.val_error_se for r in results],
        fmt="o-",
        capsize=3,
        label="ours: validation error (± standard error)",
    )
    by_depth.plot(layers, [r.train_error for r in results], "o--", label="ours: training error")
    by_depth.plot(layers, [float(r.run.paper_error) for r in results], "s:", label="paper: test error (64k iterations)")
    by_depth.set(title="final error against depth", xlabel="layers", ylabel="error (%)", xscale="log")
    by_depth.set_xticks(layers, [str(n) for n in layers])
    by_depth.minorticks_off()  # the log axis's own labels (3 x 10^1) would overlap the depths
    by_depth.legend()
    for axis in (curves, by_depth):
        axis.grid(alpha=0.3)
    save_figure(figure, out.parent / f"{out.name}.png")

    table = error_table(results)
    steps = [
        f"{a.layers} to {b.layers} layers {'lowers' if b.val_error < a.val_error else 'does not lower'} it "
        f"({a.val_error:.2f}% to {b.val_error:.2f}%)"
        for a, b in zip(results, results[1:], strict=False)
    ]
    ordered = all(a.val_error > b.val_error for a, b in zip(results, results[1:], strict=False))
    shallowest_worst = all(results[0].val_error > r.val_error for r in results[1:])
    if ordered:
        verdict = "Validation error falls with every step in depth, as in the paper"
    elif shallowest_worst:
        verdict = "The shallowest net has the highest validation error, as in the paper, but not every step helps"
    else:
        verdict = (
            "Validation error does not fall with depth at this budget (the paper's gaps, under 1.3 points from 20 "
            "to 56 layers, need a longer schedule to show)"
        )
    reading = f"{verdict}: {'; '.join(steps)}."
    paper_steps = [
        f"{a.layers} to {b.layers}: {float(a.run.paper_error) - float(b.run.paper_error):.2f}"
        for a, b in zip(results, results[1:], strict=False)
    ]
    measured = [r for r in results if r.val_images]  # runs from before config.json recorded the count have none
    if measured:
        se = max(r.val_error_se for r in measured)
        several = results[0].seeds > 1
        sample = (
            f"The mean of {results[0].seeds} runs per net (seeds), all measured on the same"
            if several
            else "One run per net, each measured on"
        )
        noise = "the seeds' spread" if several else "the sampling of the images alone"
        reading += (
            f" {sample} {measured[0].val_images:,} held-out images: from {noise}, a validation error carries a standard"
            f" error of up to {se:.2f} points, so steps under about {2 * se:.1f} points are within what this table"
            f" can tell apart (the paper's steps, in points: {'; '.join(paper_steps)})."
        )
    return "\n".join([f"![depth](../{out.name}.png)", "", table, "", "Reading: " + reading])
