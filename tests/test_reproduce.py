"""The paper experiments end to end on the embedded sample (a few steps per net), and their plans and budgets."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from resnets.cli import main
from resnets.models import create_model
from resnets.reproduce import EXPERIMENTS, reproduce
from resnets.reproduce.runner import BUDGETS, Result, Run, error_table, run_all
from resnets.train import get_recipe
from resnets.weights import read_state_dict

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "cifar10-sample.tar.gz"


def test_fast_budget_keeps_the_papers_schedule_shape():
    recipe = BUDGETS["fast"].recipe()
    steps_per_epoch = 352
    assert recipe.steps(steps_per_epoch) == 1_000
    assert [recipe.lr_at(step, steps_per_epoch, depth=56) for step in (0, 499, 500, 749, 750, 999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    assert (recipe.batch_size, recipe.weight_decay, recipe.momentum) == (128, 1e-4, 0.9)
    assert BUDGETS["paper"].recipe().steps(steps_per_epoch) == 64_000
    assert BUDGETS["paper"].recipe().lr_at(32_000, steps_per_epoch) == pytest.approx(0.01)
    medium = BUDGETS["medium"].recipe()  # the degradation run's 12k steps, with the same shape
    assert (medium.steps(steps_per_epoch), medium.milestones) == (12_000, (6_000, 9_000))


@pytest.mark.parametrize("budget", list(BUDGETS))
def test_every_planned_net_builds_with_the_papers_unit(budget):
    for name, module in EXPERIMENTS.items():
        runs = module.runs(BUDGETS[budget])
        assert len({run.key for run in runs}) == len(runs), name
        for run in runs:
            model = create_model(run.model, **run.overrides)
            assert run.paper_error, run.label
            if name.startswith("v2"):
                assert model.config.depth == BUDGETS[budget].ablation_depth
    depths = [create_model(r.model).config.depth for r in EXPERIMENTS["depth"].runs(BUDGETS["paper"])]
    assert depths == [20, 32, 44, 56, 110, 1202]
    full_preact = EXPERIMENTS["v2-activations"].runs(BUDGETS["fast"])[-1]
    assert create_model(full_preact.model, **full_preact.overrides).config.activation.value == "full_preact"


def test_degradation_writes_its_report_and_figure_and_shares_runs(tmp_path, capsys):
    out, runs = tmp_path / "results", tmp_path / "runs"
    args = ["--data", str(SAMPLE), "--iterations", "2", "--out", str(out), "--runs", str(runs)]
    args += ["--cache-dir", str(tmp_path / "cache")]
    assert main(["reproduce", "degradation", *args]) == 0
    report = (out / "degradation" / "results.md").read_text()
    assert "resnets reproduce degradation" in report and "2 iterations of batch 128" in report
    assert "Wall time:" in report
    for label in ("plain-20", "plain-56", "resnet-20", "resnet-56"):
        assert f"| {label} |" in report
    assert (out / "degradation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "degradation" / "metrics").glob("*.jsonl"))) == 4
    shared = runs / "fast-2it" / "resnet56" / "model.safetensors"
    trained_at = shared.stat().st_mtime_ns
    capsys.readouterr()

    # depth reuses resnet-20/56 and trains only the others; a rerun trains nothing.
    assert main(["reproduce", "depth", *args]) == 0
    log = capsys.readouterr().out
    assert log.count("== ") == 2 and "resnet-32" in log and "resnet-44" in log
    assert shared.stat().st_mtime_ns == trained_at
    assert main(["reproduce", "depth", *args]) == 0
    assert "== " not in capsys.readouterr().out
    depth_report = (out / "depth" / "results.md").read_text()
    assert "| resnet-44 | 44 | 658,586 |" in depth_report
    val_images = json.loads((runs / "fast-2it" / "resnet44" / "config.json").read_text())["val_images"]
    assert f"each measured on {val_images:,} held-out images" in depth_report
    assert "the paper's steps, in points: 20 to 32: 1.24; 32 to 44: 0.34; 44 to 56: 0.20" in depth_report

    # A run finished on another machine is named with both machines in the report.
    config_path = runs / "fast-2it" / "resnet56" / "config.json"
    config = json.loads(config_path.read_text())
    config["trained_on"].append({"device": "Some GPU (CUDA)", "precision": "bfloat16", "from_step": 1})
    config_path.write_text(json.dumps(config))
    assert main(["reproduce", "degradation", *args]) == 0
    report = (out / "degradation" / "results.md").read_text()
    assert "plain-20, plain-56, resnet-20 on " in report
    assert "; resnet-56 on " in report and ", then Some GPU (CUDA), bfloat16 from step 1." in report


def test_a_stopped_run_resumes_where_it_stopped(tmp_path):
    runs = tmp_path / "runs"
    kwargs = dict(iterations=3, runs_dir=runs, cache_dir=tmp_path / "cache")
    run_dir = runs / "fast-3it" / "resnet20"
    from resnets.train import train

    # A run stopped after one step (as by SIGINT) has a checkpoint and no weights: reproduce resumes it.
    recipe = BUDGETS["fast"].recipe(3)
    train("resnet20", SAMPLE, run_dir, recipe, stop_after_steps=1, cache_dir=tmp_path / "cache", progress=False)
    assert not (run_dir / "model.safetensors").exists()
    reproduce("v2-activations", SAMPLE, tmp_path / "results", **kwargs)
    steps = [row["step"] for row in _rows(run_dir)]
    assert steps == sorted(set(steps)) and steps[-1] == 3


def test_the_zoo_budget_resumes_a_run_of_the_shipped_recipe_and_finishes_begun_runs_first(tmp_path, capsys):
    zoo = BUDGETS["zoo"]
    shipped = get_recipe("cifar-fast", epochs=180, cutout=16)  # `resnets train --recipe cifar-fast --epochs 180 ...`
    assert dataclasses.replace(zoo.recipe(), log_every=shipped.log_every) == shipped
    assert zoo.recipe().steps(352) == zoo.iterations == 63_360
    assert "on one view of each image, as the paper's" in zoo.describe() and "16x16 Cutout" in zoo.describe()

    # A run begun by `resnets train` with that recipe (here cut to 2 steps) is resumed, before any new run starts.
    runs, cache = tmp_path / "runs", tmp_path / "cache"
    begun = runs / "zoo-2it" / "resnet32"
    words = ["train", "--model", "resnet32", "--data", str(SAMPLE), "--recipe", "cifar-fast", "--cutout", "16"]
    words += ["--iterations", "2", "--stop-after-steps", "1", "--out", str(begun), "--cache-dir", str(cache)]
    assert main([*words, "--no-progress"]) == 0
    assert not (begun / "model.safetensors").exists()
    capsys.readouterr()
    status = ["reproduce", "depth", "--budget", "zoo", "--iterations", "2", "--runs", str(runs), "--status"]
    assert main(status) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["not started", "begun, no epoch recorded yet"] + [
        "not started"
    ] * 2
    plan = [Run("resnet-20", "resnet20"), Run("resnet-32", "resnet32")]
    results = run_all(plan, SAMPLE, runs, zoo, iterations=2, cache_dir=cache)
    log = capsys.readouterr().out
    assert log.index("== resnet-32") < log.index("== resnet-20")
    assert "resuming with changed recipe values: --log-every 10 -> 0\n" in log  # the same recipe but its log
    assert [result.history[-1]["step"] for result in results] == [2, 2]
    assert main(status) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"resnet-32, seed 0 ({begun}): finished at step 2: validation top-1 ")
    assert "(flip-averaged), " in lines[1] and "on one view;" in lines[1] and lines[3].endswith("not started")
    # The recipe evaluates averaged over a flip; the table's error is the one-view figure recorded at the end.
    last = results[0].history[-1]
    assert 0 < last["val_top1_one_view"] <= 1 and 0 < last["val_top5_one_view"] <= 1
    assert results[0].val_errors == [100 * (1 - last["val_top1_one_view"])]
    _, meta = read_state_dict(runs / "zoo-2it" / "resnet20" / "model.safetensors")
    assert meta["val_top1_one_view"] == str(last["val_top1_one_view"]) and meta["eval_flip"] == "true"
    assert " --recipe cifar-fast --iterations 2 --cutout 16 --out " in meta["command"]  # how to make it alone
    two_figures = dataclasses.replace(results[0], histories=[[{**last, "val_top1": 0.9, "val_top1_one_view": 0.8}]])
    assert two_figures.val_errors == pytest.approx([20.0])


def test_unknown_experiment_or_budget_is_one_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown experiment 'dropout'"):
        reproduce("dropout", SAMPLE, tmp_path)
    with pytest.raises(ValueError, match="unknown budget 'slow'"):
        reproduce("depth", SAMPLE, tmp_path, budget="slow")
    assert main(["reproduce", "depth", "--data", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def _rows(run_dir: Path) -> list[dict]:
    from resnets.train.plots import read_metrics

    return read_metrics(run_dir)


@pytest.mark.parametrize(
    "val_errors, reading",
    [
        ((14.6, 13.9, 13.7, 13.6), "Validation error falls with every step in depth, as in the paper: 20 to 32 layers"),
        (
            (14.6, 13.5, 13.8, 13.6),
            "The shallowest net has the highest validation error, as in the paper, but not every step helps",
        ),
        ((35.3, 40.6, 50.5, 55.2), "Validation error does not fall with depth at this budget"),
    ],
)
def test_the_depth_reading_says_which_steps_in_depth_help(tmp_path, val_errors, reading):
    runs = EXPERIMENTS["depth"].runs(BUDGETS["fast"])
    results = [
        Result(run, [[{"step": 100, "train_top1": 0.9, "val_top1": 1 - error / 100}]], 1.0, 1, depth, [tmp_path])
        for run, error, depth in zip(runs, val_errors, (20, 32, 44, 56), strict=True)
    ]
    text = EXPERIMENTS["depth"].report(results, tmp_path / "depth")
    assert "Reading: " + reading in text
    assert "44 to 56 layers" in text and f"({val_errors[2]:.2f}% to {val_errors[3]:.2f}%)" in text


def test_seeds_train_one_run_each_on_the_same_held_out_images(tmp_path):
    runs = tmp_path / "runs"
    [result] = run_all(
        [Run("resnet-20", "resnet20")],
        SAMPLE,
        runs,
        BUDGETS["fast"],
        iterations=2,
        seeds=2,
        cache_dir=tmp_path / "cache",
    )
    first, second = runs / "fast-2it" / "resnet20", runs / "fast-2it" / "resnet20-seed1"
    assert result.run_dirs == [first, second]
    configs = [json.loads((run / "config.json").read_text()) for run in (first, second)]
    assert [config["recipe"]["seed"] for config in configs] == [0, 1]
    # The seed moves the weights and the batches, not the hold-out: the training split's statistics agree.
    assert configs[0]["mean"] == configs[1]["mean"] and configs[0]["val_images"] == configs[1]["val_images"]
    assert result.histories[0][0]["train_loss"] != result.histories[1][0]["train_loss"]
    assert result.val_error == pytest.approx(sum(result.val_errors) / 2)
    assert result.train_error == pytest.approx(
        sum(100 * (1 - history[-1]["train_top1"]) for history in result.histories) / 2
    )
    with pytest.raises(ValueError, match="seeds 0"):
        run_all([Run("resnet-20", "resnet20")], SAMPLE, runs, BUDGETS["fast"], iterations=2, seeds=0)


def test_the_depth_report_over_seeds_gives_means_and_their_spread(tmp_path):
    def rows(error: float) -> list[dict]:
        return [{"step": 100, "train_top1": 0.9, "val_top1": 1 - error / 100}]

    seed_errors = {20: (14.5, 14.7, 14.9), 32: (13.3, 13.5, 13.7), 44: (13.4, 13.2, 13.3), 56: (13.0, 12.9, 13.1)}
    results = [
        Result(run, [rows(e) for e in seed_errors[depth]], 3.0, 1, depth, [tmp_path] * 3, val_images=5000)
        for run, depth in zip(EXPERIMENTS["depth"].runs(BUDGETS["fast"]), seed_errors, strict=True)
    ]
    assert results[0].val_error == pytest.approx(14.7)
    assert results[0].val_error_se == pytest.approx(0.2 / 3**0.5)  # stdev 0.2 over sqrt(3) seeds
    assert "| 14.70 ± 0.12 |" in error_table(results)
    text = EXPERIMENTS["depth"].report(results, tmp_path / "depth")
    assert "Reading: Validation error falls with every step in depth" in text
    assert "The mean of 3 runs per net (seeds), all measured on the same 5,000 held-out images" in text


def test_a_stopped_runs_status_says_how_far_it_got(tmp_path):
    from resnets.train.run_folder import RunFolder

    folder = RunFolder(tmp_path / "run")
    folder.write_config(
        {"recipe": {"epochs": 10, "iterations": 0, "eval_flip": False}, "trained_on": [
            {"device": "Some CPU", "precision": "float32", "from_step": 0},
            {"device": "Other CPU", "precision": "bfloat16", "from_step": 352},
        ]}
    )  # fmt: skip
    # An epoch on the earlier CPU, two on the latest (the second paused for a while).
    for epoch, seconds in ((1, 100.0), (2, 360.0), (3, 2_000.0)):
        record = {"epoch": epoch, "step": 352 * epoch, "train_top1": 0.6, "val_top1": 0.5, "epoch_seconds": seconds}
        folder.append_metrics(record)
    expected = (
        "stopped after epoch 3 of 10 (step 1,056 of 3,520): validation top-1 50.00% (one view); Other CPU, bfloat16"
        "; at least 0.7 h of training left (at its fastest recent pace)"  # 7 epochs at 360 s
    )
    assert folder.status() == expected
    # Resumed on the same CPU inside epoch 4: its 200 s timed only the 100 steps after the resume (2 s a step,
    # slower than epoch 2), not the epoch's 352 steps (0.57 s a step, which would read 0.3 h).
    folder.append_metrics({"epoch": 4, "step": 1_408, "val_top1": 0.5, "epoch_seconds": 200.0, "timed_steps": 100})
    assert folder.status().endswith("; at least 0.6 h of training left (at its fastest recent pace)")  # 6 x 360 s


def test_the_run_nearest_its_end_goes_first(tmp_path):
    from resnets.reproduce.runner import _steps_done
    from resnets.train.run_folder import RunFolder

    folders = {name: RunFolder(tmp_path / name) for name in ("new", "begun", "early", "late")}
    for name, last_step in (("begun", None), ("early", 352), ("late", 24_288)):
        folders[name].path.mkdir()
        folders[name].checkpoint_path.write_bytes(b"")
        if last_step:
            folders[name].append_metrics({"epoch": last_step // 352, "step": last_step})
    order = sorted(folders, key=lambda name: -_steps_done(folders[name]))
    assert order == ["late", "early", "begun", "new"]
