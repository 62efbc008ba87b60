"""Reproduce the papers' CIFAR-10 experiments: one module per experiment, each writing results.md and figures.

Example:
    >>> reproduce("degradation", "../shared/data/cifar10-train-jpg.tar.gz", "docs/results", budget="fast")
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from types import ModuleType

from resnets.atomic import make_folder, missing_folders, remove_if_empty
from resnets.reproduce import degradation, depth, v2_activations, v2_shortcuts
from resnets.reproduce.runner import BUDGETS, Budget, copy_metrics, run_all, run_status, write_report

EXPERIMENTS: dict[str, ModuleType] = {
    "degradation": degradation,
    "depth": depth,
    "v2-shortcuts": v2_shortcuts,
    "v2-activations": v2_activations,
}
ABLATIONS = {"v2-shortcuts", "v2-activations"}


def reproduce(
    experiment: str,
    data: str | os.PathLike,
    out: str | os.PathLike = "results",
    *,
    budget: str = "fast",
    iterations: int | None = None,
    runs_dir: str | os.PathLike | None = None,
    seeds: int = 1,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> Path:
    """Train what `experiment` needs (skipping finished runs, resuming stopped ones) and write
    `OUT/<experiment>/results.md`, `OUT/<experiment>.png` and the raw metrics; returns the results.md path. With
    `seeds` > 1 each net is trained from that many seeds and the tables give the mean and its standard error."""
    module, chosen, iterations = _plan(experiment, budget, iterations)
    made = missing_folders(Path(out) / experiment)
    folder = make_folder(Path(out) / experiment)  # before hours of training, not after them
    try:
        results = run_all(
            module.runs(chosen),
            data,
            runs_dir or Path(out) / "runs",
            chosen,
            iterations=iterations,
            seeds=seeds,
            device=device,
            cache_dir=cache_dir,
        )
    except BaseException:  # bad data, a stop: no empty folders left behind to puzzle over
        remove_if_empty(made)
        raise
    copy_metrics(results, folder)
    body = module.report(results, folder)
    words = ["resnets", "reproduce", experiment, "--data", str(data), "--budget", budget, "--out", str(out)]
    words += ["--iterations", str(iterations)] if iterations and iterations != chosen.ablation_iterations else []
    words += ["--runs", str(runs_dir)] if runs_dir else []
    words += ["--seeds", str(seeds)] if seeds > 1 else []
    command = " ".join(shlex.quote(word) for word in words)
    return write_report(
        folder, title=module.TITLE, command=command, budget=chosen, iterations=iterations, results=results, body=body
    )


def status(
    experiment: str,
    out: str | os.PathLike = "results",
    *,
    budget: str = "fast",
    iterations: int | None = None,
    runs_dir: str | os.PathLike | None = None,
    seeds: int = 1,
) -> list[str]:
    """Where each run of `experiment` stands (the same runs `reproduce` with these arguments trains), one line each.

    Example:
        >>> print("\\n".join(status("depth", "docs/results", budget="zoo", runs_dir="training/reproduce")))
    """
    module, chosen, iterations = _plan(experiment, budget, iterations)
    return run_status(module.runs(chosen), runs_dir or Path(out) / "runs", chosen, iterations=iterations, seeds=seeds)


def _plan(experiment: str, budget: str, iterations: int | None) -> tuple[ModuleType, Budget, int | None]:
    """The experiment's module, its budget, and the steps per run (None: the budget's own; the V2 ablations
    default to the budget's ablation length)."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    if budget not in BUDGETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    chosen = BUDGETS[budget]
    if iterations is None and experiment in ABLATIONS:
        iterations = chosen.ablation_iterations
    return EXPERIMENTS[experiment], chosen, iterations
