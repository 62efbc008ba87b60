"""`resnets bench`: rows for ours and each peer, JSON fields, the bf16 note. Speed itself lives in benchmarks/."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from resnets.bench import timing
from resnets.cli import main
from resnets.hardware import cpu_has_native_bf16
from resnets.models import create_model, fold_batchnorm


def test_bench_json_rows_for_ours_and_peers(capsys):
    with pytest.raises(ValueError, match="torchvision has no 'resnet20'"):
        timing._peer_model("torchvision", "resnet20")  # CIFAR nets have no torchvision twin
    argv = ["bench", "resnet20", "--batch-size", "4", "--mode", "both", "--peers", "onnxruntime", "--no-compile"]
    assert main([*argv, "--warmup", "1", "--iters", "3", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    # By default ours runs every precision this CPU has natively: int8 (inference) everywhere, bf16 where native.
    native = ["bf16"] if cpu_has_native_bf16() else []
    assert [(r["engine"], r["mode"], r["dtype"]) for r in rows] == [
        ("resnets", "infer", "fp32"),
        *[("resnets", "infer", dtype) for dtype in native],
        ("resnets", "infer", "int8"),
        ("onnxruntime", "infer", "fp32"),
        ("resnets", "train", "fp32"),  # onnxruntime has no training row, int8 no training
        *[("resnets", "train", dtype) for dtype in native],
    ]
    assert {r["runtime"] for r in rows if r["dtype"] == "int8"} <= {"onnxruntime", "openvino"}
    # --engine auto (the default) times each runtime that runs fp32 and keeps the fastest (no compile asked)
    assert rows[0]["runtime"] in ("torch eager", "onnxruntime", "openvino")
    for row in rows:
        assert row["img_per_s"] > 0 and row["ms_mean"] > 0 and row["ms_std"] >= 0 and row["batch_size"] == 4
        assert {"cpu", "threads", "bf16_native", "device", "dtype", "model", "runtime"} <= set(row)


def test_bench_our_exported_model_on_onnxruntime_and_compiled(capsys):
    argv = ["bench", "resnet20", "--batch-size", "2", "--mode", "infer", "--dtype", "fp32", "--peers", "none"]
    assert main([*argv, "--engine", "onnxruntime", "--warmup", "0", "--iters", "1", "--json"]) == 0
    assert [(r["engine"], r["runtime"]) for r in json.loads(capsys.readouterr().out)] == [("resnets", "onnxruntime")]
    assert main([*argv, "--engine", "torch", "--compile", "--warmup", "0", "--iters", "1", "--json"]) == 0
    assert [r["runtime"] for r in json.loads(capsys.readouterr().out)] == ["torch compiled"]


def test_torchvision_peer_row(capsys):
    argv = ["bench", "resnet18", "--batch-size", "1", "--mode", "infer", "--peers", "torchvision,timm,openvino"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*argv, "--dtype", "fp32", "--no-compile", "--warmup", "1", "--iters", "2"]) == 0
    out = capsys.readouterr().out
    assert "device:" in out and "1.00x" in out
    assert all(f"\n{peer} " in out for peer in ("torchvision", "timm", "openvino"))
    # OpenVINO's converter traces with torch.jit; torch's deprecation of that is not the user's to act on
    assert not [w for w in caught if "torch.jit.trace" in str(w.message)]


def test_bf16_on_a_cpu_without_native_bf16_says_so(monkeypatch, capsys):
    monkeypatch.setattr("resnets.hardware.cpu_has_native_bf16", lambda: False)
    argv = ["bench", "resnet20", "--batch-size", "2", "--mode", "infer", "--dtype", "bf16", "--warmup", "0"]
    assert main([*argv, "--iters", "1"]) == 0
    assert "bf16 is emulated here" in capsys.readouterr().out


def test_folded_batchnorm_gives_the_same_outputs():
    torch.manual_seed(0)  # unseeded, about one draw in six put a logit just past the tolerance
    model = create_model("resnet50").eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the original is left as it was
    assert fold_batchnorm(model.train()).training is False and model.training
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)


def test_bench_bad_input(capsys):
    assert main(["bench", "resnet51"]) == 2
    captured = capsys.readouterr()
    assert "unknown model 'resnet51'" in captured.err and not captured.out  # before the device line
    assert main(["bench"]) == 2
    assert "name at least one model" in capsys.readouterr().err
    assert main(["bench", "resnet20", "--peers", "tensorrt"]) == 2
    assert "unknown peer 'tensorrt'" in capsys.readouterr().err


def test_sweeps_cover_the_family_and_plot_one_line_per_precision(tmp_path, capsys):
    assert timing.sweep_models("depth", ["resnet20"]) == [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)]
    assert timing.sweep_models("depth", []) == [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    # the named model's own variant at each depth the registry has
    assert timing.sweep_models("depth", ["preact_resnet50"]) == [f"preact_resnet{d}" for d in (18, 34, 50, 101, 152)]
    assert timing.sweep_models("depth", ["plain56"]) == [f"plain{d}" for d in (20, 32, 44, 56, 110)]
    assert timing.sweep_models("depth", ["resnet50v2"]) == ["resnet50v2", "resnet101v2", "resnet152v2"]
    figure = tmp_path / "batch.png"
    argv = ["bench", "resnet20", "--sweep", "batch", "--batch-size", "1", "2", "--mode", "infer", "--peers", "none"]
    assert main([*argv, "--no-compile", "--warmup", "0", "--iters", "1", "--plot", str(figure), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.split("\nwrote ")[0])
    # one row per batch size and precision: fp32 and int8 everywhere, bf16 too where the CPU has it natively
    dtypes = ["fp32", "int8", *(["bf16"] if cpu_has_native_bf16() else [])]
    assert sorted((r["batch_size"], r["dtype"]) for r in rows) == sorted((b, d) for b in (1, 2) for d in dtypes)
    assert figure.stat().st_size > 10_000 and figure.read_bytes()[:4] == b"\x89PNG"
