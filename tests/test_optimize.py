"""`optimize_for_inference` and `--fast`: each precision and runtime agrees with the eager fp32 model on real images."""

from __future__ import annotations

import json
import re
import time

import pytest
import torch

from resnets.cli import main
from resnets.data import sample_images
from resnets.deploy import Predictor
from resnets.hardware import cpu_has_native_bf16
from resnets.inference.optimize import InferenceModel, openvino_runs_bf16, optimize_for_inference


@pytest.fixture(scope="module")
def shipped():
    """The shipped resnet20 and 500 real CIFAR-10 images from the embedded sample, normalized as it was trained."""
    predictor = Predictor.load("resnet20", pretrained=True)
    images = sample_images(500, 32, mean=predictor.mean, std=predictor.std)
    with torch.no_grad():
        reference = predictor.model(images)
    return predictor.model, images, reference


def agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(1) == b.argmax(1)).float().mean())


@pytest.mark.parametrize(
    ("dtype", "options", "runtime"),
    [
        ("fp32", {"compile": False, "runtime": "torch"}, "torch eager"),
        ("fp32", {"compile": True, "runtime": "torch"}, "torch compiled"),
        ("fp32", {"runtime": "onnxruntime"}, "onnxruntime"),
        ("fp32", {"runtime": "openvino"}, "openvino"),
    ],
)
def test_fp32_paths_are_exact(shipped, dtype, options, runtime):
    model, images, reference = shipped
    fast = optimize_for_inference(model, dtype, **options)
    assert (fast.dtype, fast.runtime) == (dtype, runtime)
    torch.testing.assert_close(fast(images), reference, rtol=1e-4, atol=1e-4)
    assert model.training is False and any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_runtimes_are_timed_on_the_batch_the_caller_sends(shipped, monkeypatch):
    # The fastest runtime changes with the batch (OpenVINO's int8 resnet56 led ONNX Runtime's 1.5x at 128 images
    # and not at 16), so the candidates are timed on the caller's batch, filled from the calibration images.
    from resnets.inference import optimize

    model, images, _ = shipped
    timed, measure = [], optimize._fastest_calls
    monkeypatch.setattr(optimize, "_fastest_calls", lambda found, batch: timed.append(batch) or measure(found, batch))
    fast = optimize_for_inference(model, "fp32", calibration=images[:40], compile=False, batch_size=96)
    [batch] = timed
    assert batch.shape == (96, 3, 32, 32) and torch.equal(batch[40:80], images[:40])
    assert len(fast.choices) >= 2 and fast.runtime in {choice.split(" ", 1)[1] for choice in fast.choices}


def test_timing_rounds_stop_at_the_budget_after_two():
    # A large net at a large batch would time for minutes: past the budget no round starts after the second, and
    # under it every round runs, each candidate called twice a round (one untimed call, one timed).
    from resnets.inference import optimize

    calls = []
    slow = [lambda batch, name=name: calls.append(name) or time.sleep(0.01) for name in ("a", "b")]
    seconds = optimize._fastest_calls(slow, torch.zeros(1), rounds=5, budget_s=0.0)
    assert calls == ["a", "a", "b", "b"] * 2 and all(0.01 <= value < 1 for value in seconds)
    calls.clear()
    optimize._fastest_calls(slow, torch.zeros(1), rounds=5, budget_s=60.0)
    assert len(calls) == 2 * 2 * 5


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_int8_keeps_top1_on_real_images(shipped, runtime, cpu_at_hand):
    model, images, reference = shipped
    fast = optimize_for_inference(model, "int8", calibration=images[::2][:256], runtime=runtime)
    assert (fast.dtype, fast.runtime) == ("int8", runtime)
    assert agreement(fast(images), reference) >= 0.98


def test_bf16_agrees_with_fp32(shipped):
    model, images, reference = shipped
    fast = optimize_for_inference(model, "bf16", compile=False, runtime="torch")
    assert (fast.dtype, fast.runtime) == ("bf16", "torch eager")
    logits = fast(images[:128])
    assert logits.dtype == torch.float32
    assert agreement(logits, reference[:128]) >= 0.95


def test_openvino_bf16_where_the_cpu_has_it_and_a_clear_refusal_elsewhere(shipped):
    model, images, reference = shipped
    # OpenVINO does not emulate bf16 (it would quietly run fp32 under a bf16 label); its own reading of the CPU decides,
    # so a simulated CPU kind with BF16 flags on a CPU without them is refused too
    if not openvino_runs_bf16():
        with pytest.raises(ValueError, match="only on CPUs with native BF16"):
            optimize_for_inference(model, "bf16", runtime="openvino")
        return
    fast = optimize_for_inference(model, "bf16", runtime="openvino")
    assert (fast.dtype, fast.runtime) == ("bf16", "openvino")
    assert agreement(fast(images), reference) >= 0.95


def test_auto_keeps_the_fastest_precision_that_agrees(shipped):
    model, images, _ = shipped
    fast = optimize_for_inference(model, "auto", calibration=images[:256], compile=False)
    # every native precision on every runtime that runs it, compile=False leaving the compiled ones out
    expected = {"fp32 torch eager", "fp32 onnxruntime", "int8 onnxruntime", "fp32 openvino", "int8 openvino"}
    if cpu_has_native_bf16():
        expected |= {"bf16 torch eager"} | ({"bf16 openvino"} if openvino_runs_bf16() else set())
    assert set(fast.choices) == expected
    assert not any("compiled" in key for key in fast.choices)
    kept = {key: c for key, c in fast.choices.items() if c["top1_agreement"] >= 0.98}
    assert f"{fast.dtype} {fast.runtime}" == max(kept, key=lambda key: kept[key]["img_per_s"])


def test_auto_runs_on_calibration_images_of_another_size(shipped):
    # The ONNX graph is exported once at the calibration images' size: an export at the model's natural 32x32
    # would make the int8 candidate, quantized from it, fail on these 40x40 images.
    model, images, _ = shipped
    larger = torch.nn.functional.interpolate(images[:128], size=(40, 40), mode="bilinear", align_corners=False)
    fast = optimize_for_inference(model, "auto", calibration=larger, compile=False)
    assert {"fp32 onnxruntime", "int8 onnxruntime"} <= set(fast.choices)
    assert fast.choices["int8 onnxruntime"]["top1_agreement"] >= 0.9
    assert fast(larger[:8]).shape == (8, 10)


def test_bad_requests_are_clear(shipped):
    model, images, _ = shipped
    with pytest.raises(ValueError, match="int8 needs calibration images"):
        optimize_for_inference(model, "int8")
    with pytest.raises(ValueError, match="dtype 'int4' is not one of"):
        optimize_for_inference(model, "int4")
    with pytest.raises(ValueError, match="runs fp32 and int8, not bf16"):
        optimize_for_inference(model, "bf16", runtime="onnxruntime")
    fast = optimize_for_inference(model, "fp32", compile=False)
    # runtime="auto" times every fp32 runtime and keeps the fastest
    assert set(fast.choices) == {"fp32 torch eager", "fp32 onnxruntime", "fp32 openvino"} and fast.dtype == "fp32"
    assert isinstance(fast, InferenceModel) and fast.eval() is fast
    with pytest.raises(ValueError, match="cannot be trained"):
        fast.train()


def test_eval_and_predict_with_fast(tmp_path, capsys, cpu_at_hand):
    data = ["--data", "data/cifar10-sample.tar.gz", "--json"]
    assert main(["eval", "--model", "resnet20", "--pretrained", *data]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["eval", "--model", "resnet20", "--pretrained", "--fast", "int8", *data]) == 0
    captured = capsys.readouterr()
    fast = json.loads(captured.out)
    assert re.search(r"optimized path: int8 on (onnxruntime|openvino)", captured.err)
    assert fast["n"] == plain["n"] == 1000 and abs(fast["top1"] - plain["top1"]) <= 0.01
    missing = str(tmp_path / "missing.png")
    assert (
        main(["predict", "--model", "resnet20", "--pretrained", "--fast", "fp32", missing, "--json"]) == 2
    )  # none read: bad input
    assert "no such file" in capsys.readouterr().out
