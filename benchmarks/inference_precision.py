"""Accuracy kept by the fast inference paths: int8 and bf16 against fp32 on the CIFAR-10 validation split.

For each model: top-1 of the eager fp32 model, of `optimize_for_inference` at fp32 / int8 / bf16 on each runtime that
runs the precision (torch, ONNX Runtime, OpenVINO), the points lost against fp32, the share of images whose top-1
class agrees with fp32, and img/s at batch 256 (bf16 is emulated, and slow, on CPUs without AVX-512 BF16 or AMX; its
accuracy is still what a native CPU would give; OpenVINO does not emulate it). int8 is calibrated on 256
training-split images, never on the validation images it is scored on.

Usage:
    python benchmarks/inference_precision.py --data ../shared/data/cifar10-train-jpg.tar.gz \\
        [--model resnet20=training/resnet20-ensemble-distilled/model.safetensors] [--model resnet32=pretrained]

The default is resnet20's 45k/5k run: the shipped resnet20 and resnet56 were trained on all 50,000 images, so no
validation image is held out from them (resnet56's 45k/5k run: training/resnet56-ensemble-distilled/model.safetensors).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from resnets.data import load_dataset, normalize, stratified_split
from resnets.deploy import Predictor
from resnets.hardware import cpu_has_native_bf16, describe_device
from resnets.inference.optimize import Runtime, optimize_for_inference

# The shipped resnet20's recipe on the 45,000-image split: the same net with the validation images held out.
HELD_OUT_RESNET20 = Path(__file__).resolve().parents[1] / "training/resnet20-ensemble-distilled/model.safetensors"


def logits_of(run, images: torch.Tensor) -> tuple[torch.Tensor, float]:
    started = time.perf_counter()
    with torch.inference_mode():
        logits = torch.cat([run(batch).float() for batch in images.split(256)])
    return logits, len(images) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/cifar10-train-jpg.tar.gz")
    parser.add_argument("--model", action="append", help="NAME=pretrained or NAME=WEIGHTS (repeatable)")
    parser.add_argument("--dtypes", default="int8,bf16")
    args = parser.parse_args()
    print(f"device: {describe_device()}")
    train_set, _ = load_dataset(args.data)
    train_split, val_split = stratified_split(train_set, 0.1, seed=0)
    print(f"{len(val_split)} validation images of {args.data}; calibration: 256 training-split images")
    header = f"{'model':<10} {'path':<26} {'top-1':>7} {'vs fp32':>8} {'agree':>7} {'img/s':>7}"
    for spec in args.model or [f"resnet20={HELD_OUT_RESNET20}"]:
        name, _, source = spec.partition("=")
        predictor = Predictor.load(
            name, pretrained=source == "pretrained", weights=None if source == "pretrained" else source
        )
        if predictor.held_out_fraction == 0:
            parser.error(
                f"--model {spec}: trained on every image (--val-fraction 0), so the validation split is not held "
                "out from it; pass the weights of a run that held it out (NAME=RUN/model.safetensors)"
            )
        mean, std = predictor.mean, predictor.std
        val_images = normalize(val_split.images, mean, std)
        calibration = normalize(train_split.images[:: len(train_split) // 256][:256], mean, std)
        labels = val_split.labels
        reference, speed = logits_of(predictor.model.eval(), val_images)
        base = float((reference.argmax(1) == labels).float().mean())
        print(header)
        print(f"{name:<10} {'eager fp32':<26} {100 * base:>6.2f}% {'':>8} {'':>7} {speed:>7.0f}")
        for dtype in ["fp32", *args.dtypes.split(",")]:
            runtimes = [r for r in Runtime if r != Runtime.AUTO and r.serves(dtype)]
            if dtype == "bf16" and not cpu_has_native_bf16():
                runtimes.remove(Runtime.OPENVINO)  # OpenVINO does not emulate bf16
            for runtime in runtimes:
                row(name, predictor.model, dtype, runtime, calibration, val_images, labels, reference, base)


def row(name: str, model, dtype: str, runtime: Runtime, calibration, val_images, labels, reference, base) -> None:
    """One line: `model` at `dtype` on `runtime`, its top-1, the points lost and the agreement against eager fp32."""
    fast = optimize_for_inference(model, dtype, calibration=calibration if dtype == "int8" else None, runtime=runtime)
    fast(val_images[:256])  # compile / warm up outside the timing
    logits, speed = logits_of(fast, val_images)
    top1 = float((logits.argmax(1) == labels).float().mean())
    agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    path = f"{dtype} ({fast.runtime})"
    lost = f"{100 * (top1 - base):>+7.2f}p"
    print(f"{name:<10} {path:<26} {100 * top1:>6.2f}% {lost} {100 * agree:>6.2f}% {speed:>7.0f}")


if __name__ == "__main__":
    main()
