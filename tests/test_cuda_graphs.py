"""CUDA graphs for the training step: when a run uses them, and what GraphedForward does around the capture. The
capture itself needs a GPU; here torch.cuda.make_graphed_callables is replaced by a stand-in that runs the same
warm-up steps on the sample batch and returns a module that counts its calls, so the logic around it runs on any
CPU."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from resnets.cli import main
from resnets.models import create_model
from resnets.train import get_recipe, loop, train
from resnets.train.cuda_graphs import GraphedForward, cuda_graphs_pay
from resnets.train.plots import read_metrics

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "cifar10-sample.tar.gz"


class Replays(nn.Module):
    """What the stand-in capture returns: the captured module, counting the batches it replays."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module, self.calls = module, 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.module(images)


def stand_in_capture(captured: list):
    def make_graphed_callables(module, sample_args, num_warmup_iters=3):
        for _ in range(num_warmup_iters):  # the real warm-up's steps move batch-norm statistics too
            module(*sample_args)
        captured.append(Replays(module))
        return captured[-1]

    return make_graphed_callables


def test_cuda_graphs_are_chosen_on_a_gpu_in_one_process_unless_compiling_is_asked_for():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert cuda_graphs_pay(None, cuda, 1) and not cuda_graphs_pay(None, cpu, 1)
    assert not cuda_graphs_pay(None, cuda, 2)  # DDP all-reduces inside the backward
    assert not cuda_graphs_pay(None, cuda, 1, compile_asked=True) and not cuda_graphs_pay(False, cuda, 1)
    with pytest.raises(ValueError, match="needs a CUDA device and one process"):
        cuda_graphs_pay(True, cpu, 1)
    with pytest.raises(ValueError, match="choose one"):
        cuda_graphs_pay(True, cuda, 1, compile_asked=True)
    with pytest.raises(ValueError, match="--cuda-graphs True: not with --compile"):  # before any data is read
        get_recipe("cifar-fast", cuda_graphs=True, compile=True)


def test_graphed_forward_replays_its_shape_runs_others_eagerly_and_keeps_the_statistics(monkeypatch):
    captured = []
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", stand_in_capture(captured))
    torch.manual_seed(0)
    model = create_model("resnet20", depth=8).train()
    reference = copy.deepcopy(model)
    forward = GraphedForward(model)
    batch, short = torch.randn(8, 3, 32, 32), torch.randn(3, 3, 32, 32)
    torch.testing.assert_close(forward(batch), reference(batch))  # the capture's warm-up left no trace
    for ours, theirs in zip(model.buffers(), reference.buffers(), strict=True):
        assert torch.equal(ours, theirs)
    (replays,) = captured
    forward(batch + 1)
    forward(short)  # an epoch's shorter last batch
    forward(batch.contiguous(memory_format=torch.channels_last))  # another layout
    model.eval()
    forward(batch)  # evaluation
    assert replays.calls == 2 and len(captured) == 1  # the first batch and the next of its shape; one capture


def test_a_failed_capture_trains_eagerly_when_graphs_were_our_choice(monkeypatch):
    def broken(module, sample_args, **_):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(torch.cuda, "make_graphed_callables", broken)
    model = create_model("resnet20", depth=8).train()
    forward = GraphedForward(model)
    with pytest.warns(UserWarning, match="CUDA graph capture failed, training eagerly instead: CUDA error"):
        assert forward(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert forward(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # no second try, no second warning
    with pytest.raises(RuntimeError, match="stream is capturing"):  # asked for: the failure is the user's to see
        GraphedForward(model, required=True)(torch.randn(2, 3, 32, 32))


def test_a_run_with_graphs_trains_exactly_as_an_eager_one(tmp_path, monkeypatch):
    captured = []
    monkeypatch.setattr(torch.cuda, "make_graphed_callables", stand_in_capture(captured))
    monkeypatch.setattr(loop, "cuda_graphs_pay", lambda *args, **kwargs: True)  # as on a GPU
    # 900 images in batches of 64: each epoch ends with a shorter batch of 4, run eagerly.
    recipe = get_recipe("cifar-fast", epochs=2, batch_size=64, precision="fp32", log_every=0, compile=False)
    kwargs = dict(model_overrides={"depth": 8}, cache_dir=tmp_path, progress=False)
    graphed = train("resnet20", SAMPLE, tmp_path / "graphed", recipe, **kwargs)
    monkeypatch.setattr(loop, "cuda_graphs_pay", lambda *args, **kwargs: False)
    eager = train("resnet20", SAMPLE, tmp_path / "eager", recipe, **kwargs)
    (replays,) = captured
    assert replays.calls == 2 * 14  # every full batch of both epochs (the captured one too: capturing runs nothing)
    assert graphed.metrics["val_top1"] == eager.metrics["val_top1"]
    assert graphed.metrics["train_loss"] == eager.metrics["train_loss"]
    assert read_metrics(tmp_path / "graphed")[0]["val_loss"] == read_metrics(tmp_path / "eager")[0]["val_loss"]


def test_asking_for_graphs_without_a_gpu_fails_before_anything_is_read_or_written(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--data", str(tmp_path / "no-such-data"), "--out", str(out)]
    assert main([*argv, "--cuda-graphs"]) == 2
    assert "--cuda-graphs needs a CUDA device" in capsys.readouterr().err  # not the missing data
    assert not out.exists()
