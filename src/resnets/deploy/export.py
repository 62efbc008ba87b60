"""Export a trained model to ONNX, TorchScript or `torch.export`, and check the export against the eager model.

The check runs both on real images (the embedded CIFAR-10 sample, resized to the model's input) and prints the
largest output difference and how often their top-1 classes agree; ONNX files run through onnxruntime.

Example:
    >>> report = export_model(predictor, "onnx", "resnet20.onnx")
    >>> report["top1_agreement"]
    1.0
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from resnets.atomic import atomic_write
from resnets.data import sample_images
from resnets.deploy.optimize import onnxruntime_session, write_onnx
from resnets.deploy.predict import Predictor

FORMATS = ("onnx", "torchscript", "exported")


def check_images(predictor: Predictor, count: int = 64, data: str | os.PathLike | None = None) -> torch.Tensor:
    """`count` real images, normalized as the model expects, at its input size."""
    return sample_images(count, predictor.image_size, predictor.mean, predictor.std, data)


def export_model(
    predictor: Predictor,
    fmt: str,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    dtype: str = "fp32",
) -> dict[str, float | str]:
    """Write the export, reload it, and compare it with the eager model on real images. dtype int8 (ONNX only)
    quantizes with 256 calibration images from `data` (default: the embedded sample), checked on 64 others."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if dtype not in ("fp32", "int8") or (dtype == "int8" and fmt != "onnx"):
        raise ValueError(f"dtype {dtype!r} with format {fmt!r}: exports are fp32, and int8 for onnx")
    model = predictor.model.eval()
    images = check_images(predictor, data=data)
    example = images[:2]
    out = Path(out)
    if fmt == "onnx":
        calibration = None
        if dtype == "int8":
            calibration = sample_images(320, predictor.image_size, predictor.mean, predictor.std, data)[64:]
        atomic_write(out, lambda path: write_onnx(model, path, calibration))
        session = onnxruntime_session(out)
        exported = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.freeze(torch.jit.trace(model, example))
        atomic_write(out, lambda path: torch.jit.save(traced, path))
        with torch.no_grad():
            exported = torch.jit.load(str(out))(images)
    else:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        atomic_write(out, lambda path: torch.export.save(program, path))
        with torch.no_grad():
            exported = torch.export.load(str(out)).module()(images)
    with torch.no_grad():
        eager = model(images)
    return {
        "format": fmt,
        "dtype": dtype,
        "out": str(out),
        "images": len(images),
        "max_abs_diff": float((exported - eager).abs().max()),
        "top1_agreement": float((exported.argmax(1) == eager.argmax(1)).float().mean()),
    }
