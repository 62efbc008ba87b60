"""What every paper experiment shares: budgets, the runs (trained once, resumed, shared between experiments) and the
Markdown report.

Example:
    >>> results = run_all([Run("resnet-20", "resnet20")], "cifar10-sample.tar.gz", "runs", BUDGETS["fast"], seeds=2)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from resnets.atomic import atomic_write
from resnets.atomic import save_figure as write_figure
from resnets.models import CIFAR_DEPTHS, create_model
from resnets.train import get_recipe, train
from resnets.train.plots import pyplot
from resnets.train.recipes import Recipe
from resnets.train.run_folder import RunFolder, RunFolderError, RunLock, hardware_history


@dataclasses.dataclass(frozen=True)
class Budget:
    """How long each run trains, and with which recipe. `paper` is the ResNet paper's CIFAR schedule; `medium` and
    `fast` are the same schedule shape (lr / 10 at 50% and 75% of the steps) cut to fit a 2-core CPU: `medium` in
    hours per net, `fast` in minutes, long enough to see the curves' shapes. `zoo` is the recipe of the shipped
    weights (`cifar-fast` with Cutout for 180 epochs, about the paper's 64k steps): its runs are to be shipped."""

    name: str
    iterations: int  # optimizer steps per run, batch 128 (an epoch budget: its steps on the 45k split)
    eval_every: int  # steps between points on the curves (0: every epoch)
    depths: tuple[int, ...]  # the depth table (Table 6)
    ablation_depth: int  # depth of the V2 paper's units (the paper: 110)
    ablation_iterations: int  # steps per V2 unit
    recipe_name: str = "cifar-paper"  # the paper's step schedule, cut to `iterations`
    epochs: int = 0  # a budget counted in epochs trains `recipe_name` as it stands for that many
    cutout: int = 0

    def recipe(self, iterations: int | None = None) -> Recipe:
        steps = iterations or self.iterations
        if self.recipe_name != "cifar-paper":
            length = {"epochs": self.epochs} if self.epochs and steps == self.iterations else {"iterations": steps}
            return get_recipe(self.recipe_name, **length, cutout=self.cutout, log_every=0)
        return get_recipe(
            "cifar-paper",
            iterations=steps,
            milestones=(max(1, steps // 2), max(1, steps * 3 // 4)),  # a 1-step smoke run still has valid ones
            eval_every=min(self.eval_every, max(1, steps // 4)),
            log_every=0,
        )

    def describe(self, iterations: int | None = None) -> str:
        steps = iterations or self.iterations
        if self.recipe_name != "cifar-paper":
            recipe = self.recipe(iterations)
            length = (
                f"{steps:,} iterations of batch {recipe.batch_size} (the paper: 64,000)"
                if recipe.iterations
                else f"{recipe.epochs:g} epochs of batch {recipe.batch_size} ({steps:,} iterations on the 45k split; "
                "the paper: 64,000)"
            )
            return (
                f"`{self.name}`: the shipped weights' recipe, `{self.recipe_name}` with `--cutout {self.cutout}` for "
                f"{length}, "
                f"linear warm-up over {recipe.warmup_iterations} iterations then cosine from lr {recipe.lr:g}, SGD "
                f"nesterov momentum {recipe.momentum:g}, weight decay {recipe.weight_decay:g} on weights only, pad-4 "
                f"crop and flip and a {self.cutout}x{self.cutout} Cutout square; the tables' validation error is "
                "on one view of each image, as the paper's"
                + (
                    " (the curves' points are averaged over a horizontal flip, as the recipe evaluates)"
                    if recipe.eval_flip
                    else ""
                )
            )
        return (
            f"`{self.name}`: {steps:,} iterations of batch 128 per net (the paper: 64,000), lr 0.1 divided by 10 at "
            f"{steps // 2:,} and {steps * 3 // 4:,}, SGD momentum 0.9, weight decay 1e-4, pad-4 crop and flip"
        )


BUDGETS = {
    "fast": Budget(
        "fast", iterations=1_000, eval_every=100, depths=(20, 32, 44, 56), ablation_depth=20, ablation_iterations=500
    ),
    "medium": Budget(
        "medium",
        iterations=12_000,
        eval_every=1_000,
        depths=(20, 32, 44, 56),
        ablation_depth=20,
        ablation_iterations=12_000,
    ),
    "zoo": Budget(
        "zoo",
        iterations=180 * 352,
        eval_every=0,
        depths=(20, 32, 44, 56),
        ablation_depth=20,
        ablation_iterations=180 * 352,
        recipe_name="cifar-fast",
        epochs=180,
        cutout=16,
    ),
    "paper": Budget(
        "paper",
        iterations=64_000,
        eval_every=1_000,
        depths=CIFAR_DEPTHS,
        ablation_depth=110,
        ablation_iterations=64_000,
    ),
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One network to train: a registry name plus config overrides, and the training seed. Its directory name is
    its identity, so experiments that need the same net under the same budget and seed share one run."""

    label: str  # as the paper's table names it
    model: str
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    paper_error: str = ""  # the paper's test error (%), or "fail"
    seed: int = 0

    @property
    def key(self) -> str:
        extra = "-".join(f"{k}={v}" for k, v in sorted(self.overrides.items()))
        seed = f"-seed{self.seed}" if self.seed else ""  # seed 0 keeps the name runs had before seeds were chosen
        return self.model + (f"-{extra}" if extra else "") + seed

    def seeds(self, count: int) -> list[Run]:
        """This net trained from `count` seeds: 0, 1, ..."""
        return [dataclasses.replace(self, seed=seed) for seed in range(count)]


@dataclasses.dataclass
class Result:
    """One net's outcome over its seeds (one run per seed, all measured on the same held-out images): its errors
    are the mean of the runs' final errors, its curves are the first seed's."""

    run: Run
    histories: list[list[dict]]  # one per seed, in seed order
    seconds: float  # all seeds together
    parameters: int
    layers: int
    run_dirs: list[Path]
    val_images: int = 0  # how many held-out images val_error is measured on (0: not recorded)

    @property
    def seeds(self) -> int:
        return len(self.histories)

    @property
    def history(self) -> list[dict]:
        return self.histories[0]

    @property
    def run_dir(self) -> Path:
        return self.run_dirs[0]

    @property
    def val_errors(self) -> list[float]:
        """Each run's final validation error on one view of each image, as the paper measures (a recipe that
        evaluates averaged over a flip records that figure too, at its end)."""
        last = [history[-1] for history in self.histories]
        return [100 * (1 - row.get("val_top1_one_view", row["val_top1"])) for row in last]

    @property
    def train_error(self) -> float:
        return statistics.fmean(100 * (1 - history[-1]["train_top1"]) for history in self.histories)

    @property
    def val_error(self) -> float:
        return statistics.fmean(self.val_errors)

    @property
    def val_error_se(self) -> float:
        """The standard error of `val_error`, in points. Over several seeds: the seeds' spread over the square root
        of their count (how far the mean wanders from run to run on these images). Over one: the binomial error
        of one run's figure on `val_images` images (nan where the run did not record its held-out count)."""
        if self.seeds > 1:
            return statistics.stdev(self.val_errors) / math.sqrt(self.seeds)
        if not self.val_images:
            return float("nan")
        error = self.val_error / 100
        return 100 * math.sqrt(error * (1 - error) / self.val_images)


def runs_root(runs_dir: str | os.PathLike, budget: Budget, iterations: int | None) -> Path:
    steps = iterations or budget.iterations
    return Path(runs_dir) / (budget.name if steps == budget.iterations else f"{budget.name}-{steps}it")


def run_all(
    runs: list[Run],
    data: str | os.PathLike,
    runs_dir: str | os.PathLike,
    budget: Budget,
    *,
    iterations: int | None = None,
    seeds: int = 1,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> list[Result]:
    """Train each run from `seeds` seeds, skipping those that finished and resuming those that stopped; return one
    result per run, in order."""
    if seeds < 1:
        raise ValueError(f"seeds {seeds}: a net needs at least one run")
    root = runs_root(runs_dir, budget, iterations)
    recipe = budget.recipe(iterations)
    trials = [trial for run in runs for trial in run.seeds(seeds)]
    waiting = [run for run in trials if not RunFolder(root / run.key).model_path.exists()]
    waiting.sort(key=lambda run: -_steps_done(RunFolder(root / run.key)))  # the run nearest its end goes first
    while waiting:
        # A run another process is training (experiments share runs) is left for later, not waited on.
        for run in list(waiting):
            lock = RunLock(root / run.key)
            if lock.acquire(block=not any(RunLock(root / other.key).free() for other in waiting if other != run)):
                try:
                    if not RunFolder(root / run.key).model_path.exists():
                        _train_one(run, root / run.key, data, recipe, device, cache_dir)
                finally:
                    lock.release()
                waiting.remove(run)
            elif RunFolder(root / run.key).model_path.exists():
                waiting.remove(run)
    return [_load_result(run, [root / trial.key for trial in run.seeds(seeds)]) for run in runs]


def run_status(
    runs: list[Run], runs_dir: str | os.PathLike, budget: Budget, *, iterations: int | None = None, seeds: int = 1
) -> list[str]:
    """One line per planned run (every seed) saying where it stands, training nothing: what a long reproduction
    has done so far, and which run a process is training now."""
    root = runs_root(runs_dir, budget, iterations)
    lines = []
    for run in (trial for planned in runs for trial in planned.seeds(seeds)):
        folder = RunFolder(root / run.key)
        try:
            where = folder.status()
        except RunFolderError as error:  # one unreadable folder does not hide the others
            where = f"error: {error}"
        lines.append(f"{run.label}, seed {run.seed} ({folder.path}): {where}")
    return lines


def _steps_done(folder: RunFolder) -> int:
    """How far a begun run got, by its last record (0 before its first); -1 for a run not begun."""
    if not folder.checkpoint_path.exists():
        return -1
    rows = folder.metrics() if folder.metrics_path.is_file() else []
    return rows[-1]["step"] if rows else 0


def _train_one(run: Run, run_dir: Path, data, recipe: Recipe, device: str, cache_dir) -> None:
    print(f"== {run.label}, seed {run.seed} ({run.key}) -> {run_dir}", flush=True)
    resume = RunFolder(run_dir).checkpoint_path.exists()
    started = time.perf_counter()
    result = train(
        run.model,
        data,
        run_dir,
        dataclasses.replace(recipe, seed=run.seed),
        model_overrides=run.overrides,
        resume=resume,
        device=device,
        cache_dir=cache_dir,
        progress=False,
        overwrite=not resume,  # this runner owns its run folders; one that never reached a checkpoint starts again
    )
    timing_path = run_dir / "timing.json"
    previous = json.loads(timing_path.read_text())["seconds"] if timing_path.exists() else 0.0
    seconds = previous + time.perf_counter() - started
    atomic_write(timing_path, lambda temporary: Path(temporary).write_text(json.dumps({"seconds": seconds})))
    if result.stopped:
        raise KeyboardInterrupt  # a signal stopped the run; it was checkpointed, rerun the command to go on


def _load_result(run: Run, run_dirs: list[Path]) -> Result:
    config = RunFolder(run_dirs[0]).config()
    if "parameters" not in config:  # written before run folders recorded their size
        model = create_model(run.model, **run.overrides)
        config["parameters"] = sum(p.numel() for p in model.parameters())
        config["layers"] = model.config.depth
    timings = [run_dir / "timing.json" for run_dir in run_dirs]
    return Result(
        run=run,
        histories=[RunFolder(run_dir).metrics() for run_dir in run_dirs],
        seconds=sum(json.loads(t.read_text())["seconds"] if t.exists() else float("nan") for t in timings),
        parameters=config["parameters"],
        layers=config["layers"],
        run_dirs=run_dirs,
        val_images=config.get("val_images", 0),
    )


def copy_metrics(results: list[Result], out: Path) -> None:
    """The raw per-run metrics beside the report, so the figures can be redrawn without the checkpoints."""
    folder = out / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    for result in results:
        for run_dir, history in zip(result.run_dirs, result.histories, strict=True):
            rows = "".join(json.dumps(row) + "\n" for row in history)
            (folder / f"{run_dir.name}.jsonl").write_text(rows)


def error_table(results: list[Result], first: str = "net", paper: str = "paper, test error (%)") -> str:
    """Our final errors beside the paper's, one row per net (over several seeds: the mean, +- its standard error)."""
    header = [first, "layers", "parameters", "training error (%)", "validation error (%)", paper]
    rows = [
        [r.run.label, r.layers, f"{r.parameters:,}", f"{r.train_error:.2f}", _val_cell(r), r.run.paper_error]
        for r in results
    ]
    return markdown_table(header, rows)


def _val_cell(result: Result) -> str:
    if result.seeds == 1:
        return f"{result.val_error:.2f}"
    return f"{result.val_error:.2f} ± {result.val_error_se:.2f}"


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(
    out: Path,
    *,
    title: str,
    command: str,
    budget: Budget,
    iterations: int | None,
    results: list[Result],
    body: str,
) -> Path:
    """results.md: what was run, how long it took, on which CPU, then the experiment's own tables and reading."""
    run_info = RunFolder(results[0].run_dir).config()
    wall = sum(result.seconds for result in results)
    seeds = results[0].seeds
    nets = f"{len(results)} nets" + (f" x {seeds} seeds" if seeds > 1 else "")
    text = "\n".join(
        [
            f"# {title}",
            "",
            f"Made by `{command}`.",
            "",
            f"- Budget: {budget.describe(iterations)}; trained on {run_info['train_images']:,} images of "
            f"`{run_info['data']}`, errors on the {run_info['val_images']:,} held out (fixed, stratified).",
            *(
                [
                    f"- Seeds: {seeds} runs per net (training seeds 0 to {seeds - 1}: initial weights, batch order "
                    "and augmentation; the same held-out images); an error is the runs' mean, ± its standard error."
                ]
                if seeds > 1
                else []
            ),
            f"- Wall time: {wall / 60:.1f} min of training and evaluation over {nets} "
            f"(runs shared with other experiments count in each), {_hardware(results)}.",
            f"- Python {sys.version.split()[0]}; the raw per-run metrics are in `metrics/`.",
            "",
            body.strip(),
            "",
        ]
    )
    path = out / "results.md"
    atomic_write(path, lambda temporary: Path(temporary).write_text(text))
    return path


def _hardware(results: list[Result]) -> str:
    """Where the runs trained, grouped by hardware history (a resumed run may have changed machine)."""
    groups: dict[str, list[str]] = {}
    for result in results:
        for seed, run_dir in enumerate(result.run_dirs):
            stretches = hardware_history(RunFolder(run_dir).config())
            history = ", then ".join(
                f"{s['device']}, {s['precision']}" + (f" from step {s['from_step']:,}" if s["from_step"] else "")
                for s in stretches
            )
            groups.setdefault(history, []).append(result.run.label + (f" (seed {seed})" if seed else ""))
    if len(groups) == 1:
        return f"on {next(iter(groups))}"
    return "by net: " + "; ".join(f"{', '.join(labels)} on {history}" for history, labels in groups.items())


def error_curves(axis, result: Result, color: str, label: str) -> None:
    """The paper's Fig. 6 style: thin dashed training error, bold validation error, against iterations."""
    steps = [row["step"] for row in result.history]
    # An epoch's last record can cover a handful of steps: too few for a training error worth drawing.
    spans = [step - previous for previous, step in zip([0, *steps], steps, strict=False)]
    full = [row for row, span in zip(result.history, spans, strict=True) if span * 2 >= max(spans)]
    axis.plot([r["step"] for r in full], [100 * (1 - r["train_top1"]) for r in full], "--", color=color, linewidth=1)
    axis.plot(
        steps, [100 * (1 - row["val_top1"]) for row in result.history], "-", color=color, linewidth=2.2, label=label
    )


def save_figure(figure, path: Path) -> Path:
    figure.tight_layout()
    return write_figure(figure, path, dpi=110)


def variant_report(results: list[Result], out: Path, note: str) -> str:
    """The V2 tables: one row per unit, our error beside the paper's, and the curves in one figure."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(9, 5))
    colors = plt.get_cmap("tab10")
    for index, result in enumerate(results):
        error_curves(axis, result, colors(index % 10), result.run.label)
    axis.set(title=f"{out.name} at depth {results[0].layers}", xlabel="iteration", ylabel="error (%)")
    axis.set_ylim(0, 100)
    axis.grid(alpha=0.3)
    axis.legend(title="bold: validation, dashed: training", fontsize=8)
    save_figure(figure, out.parent / f"{out.name}.png")
    best = min(results, key=lambda r: r.val_error)
    table = error_table(results, "unit", "paper (ResNet-110), test error (%)")
    reading = f"Lowest validation error here: {best.run.label} ({best.val_error:.2f}%)."
    return "\n".join([f"![{out.name}](../{out.name}.png)", "", table, "", note, "", reading])
