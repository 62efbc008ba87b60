"""Export a trained model to ONNX, TorchScript, `torch.export` or OpenVINO IR, and check the export against the
eager model.

The check runs both on real images (the embedded CIFAR-10 sample, resized to the model's input) and prints the
largest output difference and how often their top-1 classes agree; ONNX files run through onnxruntime, IR files
through OpenVINO.

Example:
    >>> report = export_model(predictor, "onnx", "resnet20.onnx")
    >>> report["top1_agreement"]
    1.0
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from resnets.atomic import atomic_write, replaceable_mode
from resnets.data import sample_images
from resnets.deploy.predict import Predictor
from resnets.errors import WriteError
from resnets.hardware import Precision
from resnets.inference.optimize import onnxruntime_session, openvino_compile, write_onnx
from resnets.models import ResNet

FORMATS = ("onnx", "torchscript", "exported", "openvino")
SUFFIXES = {
    "onnx": (".onnx",),
    "torchscript": (".pt", ".pth", ".torchscript"),
    "exported": (".pt2",),
    "openvino": (".xml",),
}
QUANTIZABLE = ("onnx", "openvino")  # int8 is a calibrated QDQ graph, which these two formats carry


def check_images(predictor: Predictor, count: int = 64, data: str | os.PathLike | None = None) -> torch.Tensor:
    """`count` real images, normalized as the model expects, at its input size."""
    return sample_images(count, predictor.image_size, mean=predictor.mean, std=predictor.std, data=data)


def export_model(
    predictor: Predictor,
    fmt: str,
    out: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    dtype: str = "fp32",
) -> dict[str, float | str]:
    """Write the export, reload it, and compare it with the eager model on real images. dtype int8 (ONNX only)
    quantizes with 256 calibration images from `data` (default: the embedded sample), checked on 64 others drawn
    with them.
    openvino writes OUT (.xml) and its weights beside it (.bin)."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {', '.join(FORMATS)}")
    if dtype not in (Precision.FP32, Precision.INT8) or (dtype == Precision.INT8 and fmt not in QUANTIZABLE):
        raise ValueError(f"dtype {dtype!r} with format {fmt!r}: exports are fp32, and int8 for onnx and openvino")
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"--out {out}: is a folder; name the file to write")
    if fmt == "openvino" and out.suffix != ".xml":
        raise ValueError(f"--out {out}: an OpenVINO IR is an .xml file (its weights go beside it as .bin)")
    named_for = next((other for other, suffixes in SUFFIXES.items() if out.suffix.lower() in suffixes), fmt)
    if named_for != fmt:  # a file that says .onnx but holds TorchScript misleads whoever loads it
        raise ValueError(f"--out {out}: that name says {named_for}, not {fmt}; name it {out.stem}{SUFFIXES[fmt][0]}")
    if not isinstance(predictor.model, ResNet):
        raise ValueError("export writes one net, not an ensemble: export each net on its own")
    model = predictor.model.eval()
    calibration = None
    if dtype == Precision.INT8:
        # one draw spread over the classes: every fifth image checks the export, the others calibrate it, so that
        # the agreement reported is on images the quantizer never saw
        pool = sample_images(320, predictor.image_size, mean=predictor.mean, std=predictor.std, data=data)
        if len(pool) < 96:  # a handful of images gives activation ranges that clip most real inputs
            raise ValueError(
                f"--data {data}: int8 needs at least 96 images (a fifth to check, the rest to calibrate), "
                f"found {len(pool)}"
            )
        checks = torch.zeros(len(pool), dtype=torch.bool)
        checks[::5] = True
        images, calibration = pool[checks], pool[~checks]
    else:
        images = check_images(predictor, data=data)
    example = images[:2]
    if fmt == "onnx":
        atomic_write(out, lambda path: write_onnx(model, path, calibration))
        session = onnxruntime_session(out)
        exported = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    elif fmt == "openvino":
        write_openvino(model, out, calibration)
        request = openvino_compile(out, Precision(dtype)).create_infer_request()
        exported = torch.from_numpy(request.infer({0: images.numpy()})[0])
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


def write_openvino(model: torch.nn.Module, out: Path, calibration: torch.Tensor | None = None) -> Path:
    """OpenVINO IR (`out` .xml and its .bin) from our ONNX export (int8: the calibrated QDQ graph), weights kept in
    fp32; each file is renamed into place, the weights first, so a reader never finds an .xml without its .bin.

    Example:
        >>> write_openvino(model, Path("resnet20.xml"))
    """
    import openvino

    weights = out.with_suffix(".bin")
    if weights.exists() and not out.exists():  # an earlier export is a pair; a lone .bin is someone else's file
        raise WriteError(f"{weights}: exists without {out.name}; an OpenVINO export would replace it: move it first")
    replaceable_mode(weights)  # the .xml is checked by atomic_write; both before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as folder:
        staged = Path(folder) / out.name

        def convert(temporary: str) -> None:
            onnx_file = write_onnx(model, Path(folder) / "model.onnx", calibration)
            openvino.save_model(openvino.convert_model(str(onnx_file)), str(staged), compress_to_fp16=False)
            atomic_write(weights, lambda weights_temporary: os.replace(staged.with_suffix(".bin"), weights_temporary))
            os.replace(staged, temporary)

        atomic_write(out, convert)
    return out
