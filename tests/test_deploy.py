"""`resnets export`: each format is written, reloaded and agrees with the eager model on real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnets.cli import main
from resnets.data import load_dataset
from resnets.data.loaders import normalize
from resnets.deploy import Predictor
from resnets.models import create_model
from resnets.weights import save_safetensors


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet20", depth=8)
    meta = {"model_overrides": json.dumps({"depth": 8}), "mean": "[0.49,0.48,0.45]", "std": "[0.25,0.24,0.26]"}
    return str(save_safetensors(model.state_dict(), tmp_path_factory.mktemp("w") / "w.safetensors", meta))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "exported", "openvino"])
def test_export_agrees_with_eager(tmp_path, capsys, weights, fmt):
    out = tmp_path / ("model.xml" if fmt == "openvino" else f"model.{fmt}")
    argv = ["export", "--model", "resnet20", "--weights", weights, "--format", fmt, "--out", str(out), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert out.is_file() and report["images"] == 64
    assert report["max_abs_diff"] < 1e-3 and report["top1_agreement"] == 1.0
    if fmt == "openvino":  # the IR's weights beside it, and nothing half-written left in the folder
        assert out.with_suffix(".bin").is_file() and sorted(p.name for p in tmp_path.iterdir()) == [
            "model.bin",
            "model.xml",
        ]


def test_export_bad_input(tmp_path, capsys, weights):
    argv = ["export", "--model", "resnet20", "--weights", str(tmp_path / "none.pth"), "--format", "onnx"]
    assert main([*argv, "--out", str(tmp_path / "x.onnx")]) == 2
    assert "no such weight file" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_int8_onnx_export_is_checked_on_real_images(tmp_path, capsys):
    out = tmp_path / "resnet20-int8.onnx"
    argv = ["export", "--model", "resnet20", "--pretrained", "--format", "onnx", "--dtype", "int8", "--out", str(out)]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dtype"] == "int8" and report["top1_agreement"] >= 0.95
    import onnx

    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(out)).graph.node)
    ts = ["export", "--model", "resnet20", "--pretrained", "--format", "torchscript", "--dtype", "int8"]
    assert main([*ts, "--out", str(tmp_path / "x.ts")]) == 2
    assert "exports are fp32, and int8 for onnx and openvino" in capsys.readouterr().err
    xml = ["export", "--model", "resnet20", "--pretrained", "--format", "openvino", "--dtype", "int8"]
    assert main([*xml, "--out", str(tmp_path / "int8.xml"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1_agreement"] >= 0.95
    assert main([*xml, "--out", str(tmp_path / "int8.onnx")]) == 2
    assert "an OpenVINO IR is an .xml file" in capsys.readouterr().err


def test_several_shipped_nets_answer_as_the_mean_of_their_logits(tmp_path, capsys):
    sample = Path(__file__).resolve().parents[1] / "data" / "cifar10-sample.tar.gz"
    both = Predictor.load("resnet20,resnet32", pretrained=True)
    members = [Predictor.load(name, pretrained=True) for name in ("resnet20", "resnet32")]
    pixels = load_dataset(sample)[0].images[:64]
    expected = torch.stack([m.model(normalize(pixels, m.mean, m.std).float()) for m in members]).mean(0)
    with torch.no_grad():
        got = both.model(normalize(pixels, both.mean, both.std).float())
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)  # each member reads through its own statistics
    argv = ["eval", "--model", "resnet20,resnet32", "--pretrained", "--data", str(sample), "--json"]
    assert main([*argv, "--cache-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["top1"] > 0.5
    # What serves or writes one net refuses several, in one line; so does a name without shipped weights.
    export = ["export", "--model", "resnet20,resnet32", "--pretrained", "--format", "onnx"]
    refused = [
        ([*argv, "--fast", "fp32"], "serves one net, not an ensemble"),
        ([*export, "--out", str(tmp_path / "e.onnx")], "one net, not an ensemble"),
        ([*argv[:2], "resnet20,resnet1202", *argv[3:]], "model=resnet1202: neither"),
    ]
    for command, message in refused:
        assert main(command) == 2
        assert message in capsys.readouterr().err
