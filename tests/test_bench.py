"""`resnets bench`: rows for ours and each peer, JSON fields, the bf16 note. Speed itself lives in benchmarks/."""

from __future__ import annotations

import json

import pytest
import torch

from resnets.bench import timing
from resnets.bench.timing import fold_batchnorm
from resnets.cli import main
from resnets.models import create_model


def test_bench_json_rows_for_ours_and_peers(capsys):
    with pytest.raises(ValueError, match="torchvision has no 'resnet20'"):
        timing._peer_model("torchvision", "resnet20")  # CIFAR nets have no torchvision twin
    argv = ["bench", "resnet20", "--batch-size", "4", "--mode", "both", "--peers", "onnxruntime"]
    assert main([*argv, "--warmup", "1", "--iters", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["engine"], r["mode"]) for r in rows] == [
        ("resnets", "infer"),
        ("onnxruntime", "infer"),
        ("resnets", "train"),  # onnxruntime has no training row
    ]
    for row in rows:
        assert row["img_per_s"] > 0 and row["ms_mean"] > 0 and row["ms_std"] >= 0 and row["batch_size"] == 4
        assert {"cpu", "threads", "bf16_native", "device", "dtype", "model"} <= set(row)


def test_torchvision_peer_row(capsys):
    argv = ["bench", "resnet18", "--batch-size", "1", "--mode", "infer", "--peers", "torchvision,timm"]
    assert main([*argv, "--warmup", "1", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and "torchvision" in out and "timm" in out and "1.00x" in out


def test_bf16_on_a_cpu_without_native_bf16_says_so(monkeypatch, capsys):
    monkeypatch.setattr("resnets.hardware.cpu_has_native_bf16", lambda: False)
    argv = ["bench", "resnet20", "--batch-size", "2", "--mode", "infer", "--dtype", "bf16", "--warmup", "0"]
    assert main([*argv, "--iters", "1"]) == 0
    assert "bf16 is emulated here" in capsys.readouterr().out


def test_folded_batchnorm_gives_the_same_outputs():
    model = create_model("resnet50").eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_bench_bad_input(capsys):
    assert main(["bench", "resnet51"]) == 2
    assert "unknown model 'resnet51'" in capsys.readouterr().err
    assert main(["bench"]) == 2
    assert "name at least one model" in capsys.readouterr().err
