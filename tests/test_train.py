"""The training engine on the embedded CIFAR-10 sample: runs, resumes exactly, survives signals, scales with DDP."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnets.cli import _parse_overrides, build_parser, main, recipe_from_args
from resnets.models import create_model
from resnets.train import TrainingError, get_recipe, loop, train
from resnets.train.loop import compile_pays, weights_average
from resnets.train.plots import read_metrics
from resnets.train.recipes import Recipe, field_help
from resnets.weights import read_state_dict
from resnets.weights.readers import WeightsError

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "cifar10-sample.tar.gz"
# A small, fast configuration: an 8-layer CIFAR ResNet, 1,000 images, batch 60 (15 full batches of 900).
TINY = dict(batch_size=60, epochs=2, warmup_iterations=5, log_every=0)


def tiny_recipe(**fields):
    return get_recipe("cifar-fast", **{**TINY, **fields})


def weights_of(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_paper_recipe_schedule_matches_section_4_2():
    recipe = get_recipe("cifar-paper")
    steps_per_epoch = 352  # 45,000 / 128
    assert recipe.steps(steps_per_epoch) == 64_000
    assert recipe.lr_at(0, steps_per_epoch, depth=110) == 0.01  # warm-up for 110 layers
    assert recipe.lr_at(399, steps_per_epoch, depth=110) == 0.01
    assert recipe.lr_at(400, steps_per_epoch, depth=110) == 0.1
    assert recipe.lr_at(0, steps_per_epoch, depth=20) == 0.1  # no warm-up for shallow nets
    assert recipe.lr_at(31_999, steps_per_epoch, depth=20) == pytest.approx(0.1)
    assert recipe.lr_at(32_000, steps_per_epoch, depth=20) == pytest.approx(0.01)
    assert recipe.lr_at(48_000, steps_per_epoch, depth=20) == pytest.approx(0.001)
    imagenet = get_recipe("imagenet-paper")
    assert (imagenet.batch_size, imagenet.epochs, imagenet.weight_decay) == (256, 90, 1e-4)
    assert imagenet.lr_at(30 * 5005, 5005) == pytest.approx(0.01)


@pytest.mark.parametrize(
    "recipe",
    [
        get_recipe("cifar-fast", epochs=180, cutout=16),
        get_recipe("cifar-paper", iterations=12_000, milestones=(6_000, 9_000), eval_every=1_000),
        get_recipe("imagenet-paper", lr=1 / 3, nesterov=True, eval_flip=True, precision="fp32", compile=False),
        get_recipe("cifar-fast", milestones=(), teacher="runs/r56", val_fraction=0.0, schedule="step"),
        get_recipe("cifar-paper", iterations=2_000_000, milestones=(1_000_000, 1_500_000), seed=12_345_678),
    ],
)
def test_a_recipe_flags_read_back_as_the_same_recipe(recipe):
    args = build_parser().parse_args(["train", "--model", "resnet20", "--data", "D", "--out", "R", *recipe.flags()])
    assert recipe_from_args(args) == recipe


def test_every_recipe_field_is_explained_in_help(capsys):
    helps = field_help()
    assert {f.name for f in dataclasses.fields(Recipe)} - {"name"} <= set(helps)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert helps["ema_decay"] in " ".join(capsys.readouterr().out.split())


def test_fast_recipe_warms_up_then_decays_to_zero():
    recipe = get_recipe("cifar-fast")
    lrs = [recipe.lr_at(step, 352) for step in range(recipe.steps(352))]
    assert max(lrs) == pytest.approx(recipe.lr, rel=1e-3)
    assert lrs[0] < lrs[recipe.warmup_iterations - 1]
    assert lrs[-1] < 1e-3 * recipe.lr
    with pytest.raises(ValueError, match="unknown recipe 'fastest'"):
        get_recipe("fastest")


def test_a_run_writes_everything_and_the_cli_reads_it(tmp_path, capsys):
    run = tmp_path / "run"
    final = train(
        "resnet20", SAMPLE, run, tiny_recipe(), model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False
    )
    assert {p.name for p in run.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoint.pt", "model.safetensors"}
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1] == final.metrics and not final.stopped
    config = json.loads((run / "config.json").read_text())
    assert (config["train_images"], config["val_images"]) == (900, 100)
    assert config["precision"] in ("float32", "bfloat16")
    # The run says how to make it again: a `resnets train` command line, in config.json and in the weights file.
    command = shlex.split(config["command"])
    assert command[:2] == ["resnets", "train"] and command[-2:] == ["--out", str(run)]
    args = build_parser().parse_args(command[1:])
    assert (args.model, args.data, _parse_overrides(args.set)) == ("resnet20", str(SAMPLE), {"depth": 8})
    assert dataclasses.replace(recipe_from_args(args), log_every=0) == tiny_recipe()  # how often it logs aside
    assert read_state_dict(run / "model.safetensors")[1]["command"] == config["command"]

    weights = str(run / "model.safetensors")
    capsys.readouterr()  # the training log
    assert (
        main(["eval", "--model", "resnet20", "--weights", weights, "--data", str(SAMPLE), "--split", "val", "--json"])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["n"] == 100 and 0.0 <= metrics["top1"] <= metrics["top5"] <= 1.0
    # The run folder stands for its weights file; one without weights says so in one line.
    assert (
        main(["eval", "--model", "resnet20", "--weights", str(run), "--data", str(SAMPLE), "--split", "val", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out) == metrics
    assert main(["eval", "--model", "resnet20", "--weights", str(tmp_path), "--data", str(SAMPLE), "--json"]) == 2
    assert capsys.readouterr().err.count("\n") == 1

    assert main(["status", str(run)]) == 0
    assert capsys.readouterr().out.startswith(f"{run}: finished at step 30: validation top-1 ")
    assert main(["status", str(tmp_path / "elsewhere")]) == 2
    assert capsys.readouterr().err.strip().endswith("elsewhere: no such run folder")
    assert main(["status", str(run / "config.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("config.json: a file, not a run folder")
    assert main(["plot", str(run)]) == 0
    assert (run / "curves.png").stat().st_size > 10_000


def test_eval_without_flip_reproduces_the_training_validation(tmp_path, capsys):
    run = tmp_path / "run"
    # fp32 pinned: `eval` runs fp32, and where training picks bf16 (AMX, AVX-512 BF16) its validation rounds
    # differently, enough to move a near-tie image of the 100.
    final = train(
        "resnet20",
        SAMPLE,
        run,
        tiny_recipe(epochs=1, eval_flip=False, precision="fp32"),
        model_overrides={"depth": 8},
        cache_dir=tmp_path,
        progress=False,
    )
    weights = str(run / "model.safetensors")
    capsys.readouterr()  # the training log
    assert (
        main(["eval", "--model", "resnet20", "--weights", weights, "--data", str(SAMPLE), "--split", "val", "--json"])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["top1"] == pytest.approx(final.metrics["val_top1"])
    assert metrics["loss"] == pytest.approx(final.metrics["val_loss"], rel=1e-4)


def test_a_checkpoint_that_cannot_be_written_is_one_line_and_leaves_the_run_as_it_was(tmp_path, monkeypatch, capsys):
    from resnets.errors import WriteError
    from resnets.train import checkpoint

    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    run = tmp_path / "run"
    train("resnet20", SAMPLE, run, tiny_recipe(epochs=2), stop_after_steps=20, **kwargs)  # inside epoch 2
    before = {name: (run / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl")}
    capsys.readouterr()
    # stopped mid-epoch: status says the step --resume goes on from, past the last record (epoch 1, step 15)
    assert main(["status", str(run)]) == 0
    assert capsys.readouterr().out.startswith(
        f"{run}: stopped at step 20 of 30 (1 of 2 epochs and 5 steps): validation top-1 "
    )

    def disk_full(payload, path):
        Path(path).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 94592 vs 94488")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(WriteError) as error:
        train("resnet20", SAMPLE, run, tiny_recipe(epochs=2), resume=True, **kwargs)
    message = str(error.value)
    assert "checkpoint.pt: could not be written (" in message and "the last good checkpoint is kept" in message
    assert len(message.splitlines()) == 1
    # the epoch whose checkpoint failed is not in metrics.jsonl either: `status` still says step 20
    assert {name: (run / name).read_bytes() for name in before} == before
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    assert "stopped at step 20 of 30 (1 of 2 epochs and 5 steps)" in capsys.readouterr().out
    assert not (run / "model.safetensors").exists() and not list(run.glob(".*.tmp"))
    train("resnet20", SAMPLE, run, tiny_recipe(epochs=2), resume=True, **kwargs)
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2]


def test_resume_continues_exactly(tmp_path):
    recipe = tiny_recipe(epochs=2, eval_every=4)  # also evaluates inside epochs: curves over iterations
    kwargs = dict(model_overrides={"depth": 8, "drop_path_rate": 0.1}, cache_dir=tmp_path, progress=False)
    train("resnet20", SAMPLE, tmp_path / "straight", recipe, **kwargs)
    stopped = train("resnet20", SAMPLE, tmp_path / "resumed", recipe, stop_after_steps=7, **kwargs)
    assert (stopped.stopped, stopped.step, stopped.signal) == (True, 7, None)
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="already holds a run"):
        train("resnet20", SAMPLE, tmp_path / "resumed", recipe, **kwargs)
    before = {p.name: p.read_bytes() for p in (tmp_path / "resumed").iterdir()}
    with pytest.raises(ValueError, match="--stop-after-steps 5: the run is at step 7 already"):  # never met: refused
        train("resnet20", SAMPLE, tmp_path / "resumed", recipe, resume=True, stop_after_steps=5, **kwargs)
    assert {p.name: p.read_bytes() for p in (tmp_path / "resumed").iterdir()} == before
    train("resnet20", SAMPLE, tmp_path / "resumed", recipe, resume=True, **kwargs)
    straight, resumed = weights_of(tmp_path / "straight"), weights_of(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # The metrics written after the checkpoint at step 7 are replaced, not repeated.
    rows = {name: read_metrics(tmp_path / name) for name in ("straight", "resumed")}
    assert (
        [r["step"] for r in rows["resumed"]]
        == [r["step"] for r in rows["straight"]]
        == [4, 8, 12, 15, 16, 20, 24, 28, 30]
    )
    assert [r["val_top1"] for r in rows["resumed"]] == [r["val_top1"] for r in rows["straight"]]
    # Each record's seconds time the steps since the last record in this process, but for the process's first
    # (it compiles): after the resume at step 7, the record at step 8 timed none (what `resnets status` paces the
    # rest of the run by).
    assert [r["timed_steps"] for r in rows["straight"]] == [3, 4, 4, 3, 1, 4, 4, 4, 2]
    assert [r["timed_steps"] for r in rows["resumed"]] == [3, 0, 4, 3, 1, 4, 4, 4, 2]
    config = json.loads((tmp_path / "resumed" / "config.json").read_text())
    assert [s["from_step"] for s in config["trained_on"]] == [0]  # same hardware: one stretch


def test_a_run_another_process_is_training_is_refused_and_left_whole(tmp_path, capsys):
    """A forgotten background run and a second --resume would interleave checkpoints: the second is refused."""
    run = tmp_path / "run"
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    train("resnet20", SAMPLE, run, tiny_recipe(), stop_after_steps=16, **kwargs)  # past its first epoch
    assert not (run / ".lock").exists(), "a run that ends lets go of its folder"
    before = {path.name: path.read_bytes() for path in run.iterdir()}
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        (run / ".lock").write_text(str(other.pid))
        try:
            command = ["train", "--model", "resnet20", "--set", "depth=8", "--data", str(SAMPLE), "--out", str(run)]
            assert main([*command, "--resume", "--batch-size", "60", "--epochs", "2", "--no-progress"]) == 2
            error = capsys.readouterr().err.strip()
            assert len(error.splitlines()) == 1 and f"process {other.pid} is training this run now" in error
            assert main(["status", str(run)]) == 0
            assert f"training now (process {other.pid})" in capsys.readouterr().out
        finally:
            other.kill()
    assert {path.name: path.read_bytes() for path in run.iterdir() if path.name != ".lock"} == before
    # The holder is dead now: its lock is stale, and the run resumes.
    train("resnet20", SAMPLE, run, tiny_recipe(), resume=True, **kwargs)
    assert (run / "model.safetensors").is_file() and not (run / ".lock").exists()


def test_a_run_resumed_on_other_hardware_records_both_stretches(tmp_path):
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    train("resnet20", SAMPLE, tmp_path / "run", tiny_recipe(epochs=1, precision="fp32"), stop_after_steps=4, **kwargs)
    train("resnet20", SAMPLE, tmp_path / "run", tiny_recipe(epochs=1, precision="bf16"), resume=True, **kwargs)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert [(s["precision"], s["from_step"]) for s in config["trained_on"]] == [("float32", 0), ("bfloat16", 4)]


def test_weights_average_is_evaluated_saved_and_resumed(tmp_path):
    recipe = tiny_recipe(epochs=2, ema_decay=0.9)
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    train("resnet20", SAMPLE, tmp_path / "straight", recipe, **kwargs)
    train("resnet20", SAMPLE, tmp_path / "resumed", recipe, stop_after_steps=7, **kwargs)
    train("resnet20", SAMPLE, tmp_path / "resumed", recipe, resume=True, **kwargs)
    straight, resumed = weights_of(tmp_path / "straight"), weights_of(tmp_path / "resumed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    # What is saved is the average (BN statistics included), not the last step's weights.
    checkpoint = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    average = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items() if k.startswith("module.")}
    assert all(torch.equal(straight[k], average[k]) for k in straight)
    assert not torch.equal(straight["fc.weight"], checkpoint["model"]["fc.weight"])
    assert not torch.equal(straight["bn1.running_mean"], checkpoint["model"]["bn1.running_mean"])
    train("resnet20", SAMPLE, tmp_path / "plain", tiny_recipe(epochs=1), stop_after_steps=3, **kwargs)
    with pytest.raises(WeightsError, match="kept no moving average"):
        train("resnet20", SAMPLE, tmp_path / "plain", recipe, resume=True, **kwargs)


def test_weights_average_decay_warms_up():
    model = torch.nn.Linear(1, 1, bias=False)
    average = weights_average(model, decay=0.999)
    expected = []
    for step, value in enumerate([0.0, 1.0, 1.0, 1.0]):
        model.weight.data.fill_(value)
        # the first update copies; the n-th after it decays by min(0.999, (1+n)/(10+n))
        average.update_parameters(model)
        previous = expected[-1] if expected else value
        decay = min(0.999, (1 + step) / (10 + step)) if step else 0.0
        expected.append(decay * previous + (1 - decay) * value)
    assert torch.allclose(average.module.weight.flatten(), torch.tensor(expected[-1]))
    # with a fixed 0.999 the average would still be ~0.003 after three steps toward 1.0; warmed up it is past 0.5
    assert float(average.module.weight.detach()) > 0.5


def test_sigterm_checkpoints_and_resume_finishes_the_same_run(tmp_path):
    args = ["--model", "resnet20", "--data", str(SAMPLE), "--recipe", "cifar-fast", "--set", "depth=8"]
    args += ["--batch-size", "60", "--epochs", "3", "--warmup-iterations", "5", "--cache-dir", str(tmp_path)]
    args += ["--no-progress", "--log-every", "1"]
    command = [sys.executable, "-m", "resnets.cli", "train", *args]
    # A fresh interpreter starts the run, signals it and waits for it: the suite's own process carries every earlier
    # test's threads and handlers, and once died (SIGSEGV) while waiting here on a child it had signalled.
    killer = textwrap.dedent(
        f"""
        import signal, subprocess, sys
        process = subprocess.Popen({[*command, "--out", str(tmp_path / "killed")]!r}, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:  # wait until it is mid-way through the second epoch
            if line.startswith("epoch 2 batch 3/"):
                process.send_signal(signal.SIGTERM)
                break
        print(process.stdout.read())
        sys.exit(process.wait(timeout=120))
        """
    )
    stopped = subprocess.run([sys.executable, "-c", killer], capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert "stopped at step" in stopped.stdout and "continue with --resume" in stopped.stdout
    subprocess.run([*command, "--out", str(tmp_path / "killed"), "--resume"], check=True, capture_output=True)
    subprocess.run([*command, "--out", str(tmp_path / "straight")], check=True, capture_output=True)
    straight, resumed = weights_of(tmp_path / "straight"), weights_of(tmp_path / "killed")
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    train("resnet20", SAMPLE, run, tiny_recipe(epochs=1), **kwargs)
    good = (run / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*last good checkpoint is kept"):
        train("resnet20", SAMPLE, run, tiny_recipe(epochs=3, lr=1e12, warmup_iterations=0), resume=True, **kwargs)
    assert (run / "checkpoint.pt").read_bytes() == good


def test_two_ddp_processes_match_one_with_the_same_global_batch(tmp_path):
    # GroupNorm: BatchNorm's statistics depend on the per-process batch, GroupNorm's do not. A few small steps:
    # longer runs of this tiny net amplify float rounding (1 vs 2 threads differ by 1e-4 after 15 steps).
    common = ["--model", "resnet20", "--data", str(SAMPLE), "--recipe", "cifar-fast", "--cache-dir", str(tmp_path)]
    common += ["--set", "depth=8", "norm_layer=group", "--batch-size", "60", "--iterations", "4", "--lr", "0.01"]
    common += ["--warmup-iterations", "0", "--no-progress", "--log-every", "0", "--precision", "fp32"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533"]
    ddp_run = [*torchrun, "-m", "resnets.cli", "train", *common, "--out", str(tmp_path / "ddp")]
    subprocess.run(ddp_run, check=True, env=env, capture_output=True)
    one_run = [sys.executable, "-m", "resnets.cli", "train", *common, "--out", str(tmp_path / "one")]
    subprocess.run(one_run, check=True, env=env, capture_output=True)
    ddp, one = weights_of(tmp_path / "ddp"), weights_of(tmp_path / "one")
    for key in one:
        torch.testing.assert_close(ddp[key], one[key], rtol=0, atol=1e-6)
    torch.manual_seed(0)
    initial = create_model("resnet20", depth=8, norm_layer="group").state_dict()
    assert (one["conv1.weight"] - initial["conv1.weight"]).abs().max() > 1e-4  # training moved the weights
    assert json.loads((tmp_path / "ddp" / "config.json").read_text())["world_size"] == 2


def test_train_cli_errors_are_one_line(tmp_path, capsys):
    assert (
        main(["train", "--model", "resnet20", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["train", "--model", "resnet21", "--data", str(SAMPLE), "--out", str(tmp_path / "r")]) == 2
    assert "unknown model 'resnet21'" in capsys.readouterr().err


def test_the_weights_file_says_how_it_was_made(tmp_path):
    from safetensors import safe_open

    run = tmp_path / "run"
    final = train(
        "resnet20", SAMPLE, run, tiny_recipe(epochs=1), model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False
    )
    with safe_open(str(run / "model.safetensors"), "pt") as file:
        meta = file.metadata()
    config = json.loads((run / "config.json").read_text())
    assert (meta["recipe"], meta["epochs"], meta["steps"]) == ("cifar-fast", "1", "15")
    assert float(meta["val_top1"]) == final.metrics["val_top1"] and meta["eval_flip"] == "true"
    assert json.loads(meta["trained_on"]) == config["trained_on"] and json.loads(meta["recipe_fields"])["lr"] == 0.1
    assert config["parameters"] == sum(p.numel() for p in create_model("resnet20", depth=8).parameters())


def test_compile_is_chosen_for_long_runs_where_inductor_runs(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(loop, "can_compile", lambda: True)
    assert not compile_pays(None, cpu, loop.COMPILE_MIN_STEPS - 1)  # compile time would not be repaid
    assert compile_pays(None, cpu, 64_000) and compile_pays(None, cuda, 64_000)
    assert compile_pays(True, cpu, 10) and not compile_pays(False, cuda, 64_000)  # as asked
    monkeypatch.setattr(loop, "can_compile", lambda: False)
    assert not compile_pays(None, cpu, 64_000)  # no C++ compiler on the PATH


def test_a_compile_that_fails_falls_back_to_eager_when_it_was_our_choice(tmp_path, monkeypatch):
    def broken_compile(model, **_):
        def fail(*args, **kwargs):
            raise RuntimeError("InductorError: cannot find a working C++ compiler\nmore lines")

        return fail

    monkeypatch.setattr(loop, "COMPILE_MIN_STEPS", 1)
    monkeypatch.setattr(torch, "compile", broken_compile)
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    with pytest.warns(UserWarning, match="torch.compile failed, training eagerly instead: InductorError"):
        train("resnet20", SAMPLE, tmp_path / "auto", tiny_recipe(epochs=1), **kwargs)
    eager = train("resnet20", SAMPLE, tmp_path / "eager", tiny_recipe(epochs=1, compile=False), **kwargs)
    assert read_metrics(tmp_path / "auto")[-1]["val_top1"] == eager.metrics["val_top1"]  # the same run, eagerly
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):  # asked for: the failure is the user's to see
        train("resnet20", SAMPLE, tmp_path / "asked", tiny_recipe(epochs=1, compile=True), **kwargs)


def test_a_compiled_run_trains_and_saves_plain_weights(tmp_path):
    # 900 images in batches of 60: one batch shape, so one compile.
    run = tmp_path / "compiled"
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    final = train("resnet20", SAMPLE, run, tiny_recipe(epochs=1, compile=True, precision="fp32"), **kwargs)
    assert json.loads((run / "config.json").read_text())["compiled"] is True
    train("resnet20", SAMPLE, tmp_path / "eager", tiny_recipe(epochs=1, precision="fp32"), **kwargs)
    compiled, plain = weights_of(run), weights_of(tmp_path / "eager")
    assert set(compiled) == set(plain)  # no "_orig_mod." prefixes
    # Fused kernels round differently and SGD at lr 0.1 amplifies it, so compare what the epoch learned.
    eager = read_metrics(tmp_path / "eager")[-1]
    assert abs(final.metrics["train_loss"] - eager["train_loss"]) < 0.05, (final, eager)


def test_tensorboard_without_its_package_is_said_not_ignored(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False, stop_after_steps=1)
    with pytest.warns(UserWarning, match="--tensorboard needs the tensorboard package"):
        train("resnet20", SAMPLE, tmp_path / "run", tiny_recipe(epochs=1, tensorboard=True), **kwargs)


def test_an_unfinished_run_is_evaluated_from_its_checkpoint_with_its_preprocessing(tmp_path, capsys):
    run = tmp_path / "run"
    train(
        "resnet20", SAMPLE, run, tiny_recipe(epochs=1), model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False
    )
    capsys.readouterr()  # the training log
    evaluate = ["eval", "--data", str(SAMPLE), "--split", "val", "--json", "--weights"]
    assert main([*evaluate, str(run / "model.safetensors")]) == 0  # no --model: the file names its net
    finished = json.loads(capsys.readouterr().out)
    # A checkpoint holds tensors only: its classes and normalization come from the run's config.json, so it scores
    # what the weights file scores (read with ImageNet's mean and std, the figures would move).
    assert main([*evaluate, str(run / "checkpoint.pt")]) == 0
    assert json.loads(capsys.readouterr().out) == finished
    (run / "model.safetensors").rename(tmp_path / "aside.safetensors")  # as a run that has not finished
    with pytest.warns(UserWarning, match="has not finished; its latest checkpoint is used"):
        assert main([*evaluate, str(run)]) == 0
    assert json.loads(capsys.readouterr().out) == finished
    # Converted, the checkpoint keeps the run's net, settings, classes and normalization, and scores the same.
    converted = tmp_path / "converted.safetensors"
    assert main(["convert", str(run / "checkpoint.pt"), str(converted)]) == 0
    assert read_state_dict(converted)[1]["classes"] == json.dumps(
        json.loads((run / "config.json").read_text())["classes"]
    )
    capsys.readouterr()
    assert main([*evaluate, str(converted)]) == 0
    assert json.loads(capsys.readouterr().out) == finished
    assert main(["eval", "--pretrained", "--data", str(SAMPLE)]) == 2
    assert "--pretrained needs --model NAME" in capsys.readouterr().err
    # Tensors alone (no metadata naming the net): the library's hint is given as the flag that mends it.
    from safetensors.torch import save_file

    save_file(load_file(converted), tmp_path / "bare.safetensors")
    assert main([*evaluate, str(tmp_path / "bare.safetensors")]) == 2
    assert "does not name its net (no 'model' metadata); name it: --model NAME" in capsys.readouterr().err
    # Moved out of its run folder, a checkpoint still says its net, settings, classes and normalization itself.
    alone = tmp_path / "alone.pt"
    alone.write_bytes((run / "checkpoint.pt").read_bytes())
    assert main([*evaluate, str(alone)]) == 0
    assert json.loads(capsys.readouterr().out) == finished
    assert main(["convert", str(alone), str(tmp_path / "alone.safetensors")]) == 0
    assert read_state_dict(tmp_path / "alone.safetensors")[1]["mean"] == read_state_dict(converted)[1]["mean"]
    # A checkpoint without that card (as runs wrote before it) beside another tool's config.json is read as a
    # plain checkpoint, the config left alone.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    plain = torch.load(run / "checkpoint.pt", weights_only=True)
    del plain["weights_card"]
    torch.save(plain, foreign / "checkpoint.pt")
    (foreign / "config.json").write_text('{"architectures": ["SomethingElse"]}')
    assert main([*evaluate, str(foreign / "checkpoint.pt"), "--model", "resnet20"]) == 2
    assert "does not fit model resnet20" in capsys.readouterr().err  # an 8-layer net's tensors, named as such
