"""Weights from torchvision, timm, Keras, Paddle and Caffe names: loaded, converted, checked against the frameworks."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

import resnets
from resnets.cli import main
from resnets.weights import WeightsError, convert, load_weights, read_state_dict
from resnets.weights import pretrained as pretrained_module
from resnets.weights.mapping import from_caffe, to_caffe

PEERS = Path(__file__).parent / "peers"


def peer_outputs(tmp_path_factory, framework: str, script: str) -> Path:
    """Run a peer framework in its own process (TensorFlow and torch crash when they share one)."""
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"PEER NOT INSTALLED: {framework}; `make test` installs it (pip install -e '.[peers]')")
    out = tmp_path_factory.mktemp(framework)
    result = subprocess.run(
        [sys.executable, str(PEERS / script), str(out)], capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory):
    return peer_outputs(tmp_path_factory, "keras", "keras_reference.py")


@pytest.fixture(scope="module")
def paddle_dir(tmp_path_factory):
    return peer_outputs(tmp_path_factory, "paddle", "paddle_reference.py")


def logits(model: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(x).numpy()


@pytest.fixture(scope="module")
def torchvision_resnet50():
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    for module in model.modules():  # non-trivial statistics, so that mis-mapped BN buffers show
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model


X = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("wrap", ["bare", "checkpoint", "ddp", "safetensors"])
def test_torchvision_files_load_in_every_wrapping(tmp_path, torchvision_resnet50, wrap):
    state = torchvision_resnet50.state_dict()
    path = tmp_path / ("w.safetensors" if wrap == "safetensors" else "w.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        payload = {
            "bare": state,
            "checkpoint": {"epoch": 3, "state_dict": state, "optimizer": {"lr": 0.1}},
            "ddp": {"model": {f"module.{k}": v for k, v in state.items()}},
        }[wrap]
        torch.save(payload, path)
    model = resnets.create_model("resnet50", weights=path)
    np.testing.assert_allclose(logits(model, X), logits(torchvision_resnet50, X), rtol=1e-5, atol=1e-5)


def test_timm_resnet50_loads_and_matches():
    timm = pytest.importorskip("timm", reason="PEER NOT INSTALLED: timm")
    torch.manual_seed(0)
    reference = timm.create_model("resnet50", pretrained=False).eval()
    ours = resnets.create_model("resnet50")
    ours.load_state_dict(reference.state_dict(), strict=True)
    np.testing.assert_allclose(logits(ours, X), logits(reference, X), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("keras_name, ours", [("ResNet50", "resnet50_keras"), ("ResNet50V2", "resnet50v2")])
@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_keras_applications_weights_give_keras_outputs(keras_dir, keras_name, ours, suffix):
    x = torch.from_numpy(np.load(keras_dir / "input.npy")).permute(0, 3, 1, 2)  # Keras is NHWC
    model = resnets.create_model(ours, weights=keras_dir / f"{keras_name}{suffix}")
    expected = np.load(keras_dir / f"{keras_name}.logits.npy")
    np.testing.assert_allclose(logits(model, x), expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("keras_name, ours", [("ResNet50", "resnet50_keras"), ("ResNet50V2", "resnet50v2")])
def test_keras_weights_read_rgb_images_as_keras_preprocess_input_does(tmp_path, keras_dir, keras_name, ours):
    from resnets.weights.pretrained import load_trained

    # what predict and eval do with an RGB image in 0..1: the file's own normalization, from its metadata
    converted = tmp_path / f"{ours}.safetensors"
    resnets.convert(keras_dir / f"{keras_name}.h5", converted, ours)
    model, card = load_trained(converted)
    image = torch.from_numpy(np.load(keras_dir / "input.npy")).permute(0, 3, 1, 2)
    normalized = (image - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
    expected = np.load(keras_dir / f"{keras_name}.preprocessed_logits.npy")  # Keras on preprocess_input(image * 255)
    scale = max(1.0, float(np.abs(expected).max()))  # v1's 0..255 inputs make its logits large
    np.testing.assert_allclose(logits(model, normalized), expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("file", ["paddle_resnet50", "caffe_resnet50"])
def test_paddle_weights_give_paddle_outputs(paddle_dir, file):
    x = torch.from_numpy(np.load(paddle_dir / "input.npy"))
    model = resnets.create_model("resnet50", weights=paddle_dir / f"{file}.pdparams")
    expected = np.load(paddle_dir / f"{file}.logits.npy")
    # Random BN statistics make these logits large (thousands): compare at 1e-4 of their scale.
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(logits(model, x), expected, rtol=0, atol=1e-4 * scale)


@pytest.mark.parametrize("name", ["resnet50", "resnet101_paper", "resnet152"])
def test_caffe_names_round_trip_exactly(tmp_path, name):
    torch.manual_seed(0)
    source = resnets.create_model(name)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    caffe = to_caffe(state)
    assert "conv1_weights" in caffe and "bn_conv1_scale" in caffe and "bn2a_branch2a_offset" in caffe
    if name != "resnet50":
        assert "res4b22_branch2c_weights" in caffe  # the long fourth stage is numbered, as in seed 000
    assert set(from_caffe(caffe)) == set(state)
    assert all(torch.equal(from_caffe(caffe)[k], v) for k, v in state.items())
    torch.save(caffe, tmp_path / "caffe.pth")
    loaded = resnets.create_model(name, weights=tmp_path / "caffe.pth")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_convert_each_format_to_safetensors(tmp_path, keras_dir, paddle_dir, torchvision_resnet50):
    torch.save(torchvision_resnet50.state_dict(), tmp_path / "tv.pth")
    cases = [
        ("resnet50", tmp_path / "tv.pth"),
        ("resnet50v2", keras_dir / "ResNet50V2.h5"),
        ("resnet50_keras", keras_dir / "ResNet50.keras"),
        ("resnet50", paddle_dir / "paddle_resnet50.pdparams"),
        ("resnet50", paddle_dir / "caffe_resnet50.pdparams"),
    ]
    for index, (name, source) in enumerate(cases):
        destination = tmp_path / f"converted{index}.safetensors"
        assert main(["convert", str(source), str(destination), "--model", name]) == 0
        before = resnets.create_model(name, weights=source)
        after = resnets.create_model(name, weights=destination)
        np.testing.assert_array_equal(logits(after, X), logits(before, X))
        _, metadata = read_state_dict(destination)
        assert metadata["model"] == name and metadata["source_file"] == source.name


class RunsCode:
    """A pickle payload that would create a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("suffix", [".pth", ".pdparams"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, capsys, suffix):
    marker = tmp_path / "pwned"
    evil = tmp_path / f"evil{suffix}"
    if suffix == ".pth":
        torch.save({"conv1.weight": torch.zeros(1), "payload": RunsCode(marker)}, evil)
    else:
        evil.write_bytes(pickle.dumps({"conv1.weight": RunsCode(marker)}))
    with pytest.raises(WeightsError, match="refused"):
        load_weights(resnets.create_model("resnet20"), evil)
    assert main(["convert", str(evil), str(tmp_path / "out.safetensors"), "--model", "resnet20"]) == 2
    err = capsys.readouterr().err
    assert "refused" in err and err.count("\n") == 1
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".h5", ".pdparams"])
def test_truncated_file_gives_one_line_error(tmp_path, capsys, suffix):
    model = resnets.create_model("resnet20")
    path = tmp_path / f"model{suffix}"
    if suffix == ".h5":
        import h5py

        with h5py.File(path, "w") as file:
            file.create_dataset("model_weights/x", data=np.zeros(100000, dtype="float32"))
    elif suffix == ".pdparams":
        path.write_bytes(pickle.dumps({k: v.numpy() for k, v in model.state_dict().items()}))
    else:
        convert_source = tmp_path / "full.pth"
        torch.save(model.state_dict(), convert_source)
        convert(convert_source, tmp_path / "model.safetensors", "resnet20")
        if suffix == ".pth":
            path = convert_source
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert main(["convert", str(path), str(tmp_path / "out.safetensors"), "--model", "resnet20"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err


def test_wrong_architecture_is_named_and_leaves_the_model_unchanged(tmp_path, capsys):
    torch.save(resnets.create_model("resnet18").state_dict(), tmp_path / "r18.pth")
    model = resnets.create_model("resnet50")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsError, match=r"does not fit model resnet50: missing \d+ keys \(first: layer1.0.conv3"):
        load_weights(model, tmp_path / "r18.pth")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert main(["convert", str(tmp_path / "r18.pth"), str(tmp_path / "o.safetensors"), "--model", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "does not fit model resnet50" in err and err.count("\n") == 1


def test_other_number_of_classes_on_request(tmp_path):
    source = resnets.create_model("resnet20", num_classes=100)
    torch.save(source.state_dict(), tmp_path / "c100.pth")
    model = resnets.create_model("resnet20")
    with pytest.raises(WeightsError, match="has 100 classes but model resnet20 has 10"):
        load_weights(model, tmp_path / "c100.pth")
    fc_before = model.fc.weight.clone()
    model = resnets.create_model("resnet20", weights=tmp_path / "c100.pth", reset_classifier=True)
    assert model.fc.out_features == 10
    assert torch.equal(model.layer3[2].conv2.weight, source.layer3[2].conv2.weight)
    assert fc_before.shape == model.fc.weight.shape


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(WeightsError, match="no such weight file"):
        load_weights(resnets.create_model("resnet20"), tmp_path / "nope.pth")
    (tmp_path / "weights.txt").write_text("hello")
    with pytest.raises(WeightsError, match="unknown weight format"):
        load_weights(resnets.create_model("resnet20"), tmp_path / "weights.txt")


def test_shipped_weights_are_checked_against_their_sha256(tmp_path, monkeypatch):
    source = resnets.create_model("resnet20")
    file = convert_to(tmp_path, source)
    spec = pretrained_module.Pretrained(
        model="resnet20",
        file=str(file),
        sha256=pretrained_module.sha256_of(file),
        num_classes=10,
        metrics={"val_top1": 0.5},
        command="a test",
    )
    monkeypatch.setitem(pretrained_module.PRETRAINED, "resnet20", spec)
    model = resnets.create_model("resnet20", pretrained=True)
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    monkeypatch.setitem(pretrained_module.PRETRAINED, "resnet20", dataclasses.replace(spec, sha256="0" * 64))
    with pytest.raises(WeightsError, match="does not match"):
        resnets.create_model("resnet20", pretrained=True)
    with pytest.raises(WeightsError, match="no pretrained weights ship for 'resnet1202'"):
        resnets.create_model("resnet1202", pretrained=True)
    with pytest.raises(ValueError, match="unknown model 'resnet2O'; did you mean resnet20"):
        resnets.create_model("resnet2O", pretrained=True)  # a misspelt name is not "not shipped"


def convert_to(tmp_path: Path, model: torch.nn.Module) -> Path:
    torch.save(model.state_dict(), tmp_path / "src.pth")
    return convert(tmp_path / "src.pth", tmp_path / "shipped.safetensors", "resnet20")


@pytest.fixture(scope="module")
def decoded_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("decoded")  # the archive is decoded once for every shipped file's evaluation


@pytest.mark.parametrize("name", sorted(pretrained_module.PRETRAINED))
def test_each_shipped_file_reproduces_its_recorded_accuracy(name, capsys, decoded_cache):
    full = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-train-jpg.tar.gz"
    spec = pretrained_module.PRETRAINED[name]
    argv = ["eval", "--model", name, "--pretrained", "--data", str(full), "--split", "val", "--flip", "--json"]
    argv += ["--cache-dir", str(decoded_cache)]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert metrics["n"] == 5000
    assert metrics["top1"] == pytest.approx(spec.metrics["val_top1"], abs=1e-4)
