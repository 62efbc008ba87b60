"""Load any supported weight file into a model, all-or-nothing; write safetensors atomically.

Example:
    >>> load_weights(model, "resnet50-timm.safetensors")
    >>> convert("ResNet50V2.h5", "resnet50v2.safetensors", model_name="resnet50v2")
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from resnets.atomic import atomic_write
from resnets.errors import RESET_CLASSIFIER_HINT
from resnets.weights.mapping import from_caffe, from_keras, from_paddle, keras_preprocessing, naming_of
from resnets.weights.readers import (
    WeightsError,
    detect_format,
    read_keras,
    read_paddle,
    read_safetensors,
    read_torch,
)

CLASSIFIER_KEYS = ("fc.weight", "fc.bias")


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A weight file of any supported format as (tensors under our parameter names, metadata).

    Example:
        >>> tensors, meta = read_state_dict("ResNet50.h5")
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weight file")
    fmt = detect_format(path)
    metadata = {"source_format": fmt, "source_file": path.name}
    if fmt in ("keras_h5", "keras_zip"):
        try:
            layers = read_keras(path, fmt)
            return from_keras(layers), {**metadata, **keras_preprocessing(layers)}
        except WeightsError as error:
            raise WeightsError(f"{path}: {error}") from None
    if fmt == "safetensors":
        tensors, stored = read_safetensors(path)
        metadata.update(stored)
    elif fmt == "paddle":
        tensors = read_paddle(path)
    else:
        tensors, stored = read_torch(path)
        metadata.update(stored)
    naming = naming_of(list(tensors))
    if naming == "caffe":
        tensors = from_caffe(tensors)
    elif naming == "paddle":
        tensors = from_paddle(tensors)
    metadata["naming"] = naming
    return tensors, metadata


def _describe(model: nn.Module) -> str:
    return getattr(model, "name", type(model).__name__)


def _check(model: nn.Module, tensors: dict[str, torch.Tensor], path: Path, reset_classifier: bool) -> dict:
    """The tensors to load, after every check passes; the model is not touched here."""
    expected = model.state_dict()
    tensors = dict(tensors)
    for key, value in expected.items():  # torch-only counters that other frameworks do not keep
        if key.endswith("num_batches_tracked") and key not in tensors:
            tensors[key] = value
    # Another number of classes: the classifier's rows differ, its inputs (the backbone's width) do not.
    classifier_differs = (
        "fc.weight" in tensors
        and "fc.weight" in expected
        and tensors["fc.weight"].shape[0] != expected["fc.weight"].shape[0]
        and tensors["fc.weight"].shape[1:] == expected["fc.weight"].shape[1:]
    )
    if classifier_differs or (reset_classifier and "fc.weight" not in expected):
        if not reset_classifier:
            classes = tensors["fc.weight"].shape[0]
            raise WeightsError(
                f"{path}: has {classes} classes but model {_describe(model)} has {expected['fc.weight'].shape[0]};"
                f" {RESET_CLASSIFIER_HINT}"
            )
        tensors = {k: v for k, v in tensors.items() if k not in CLASSIFIER_KEYS}
        for key in CLASSIFIER_KEYS:
            if key in expected:
                tensors[key] = expected[key]  # keep the model's own freshly initialized classifier
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    mismatched = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (first: {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (first: {', '.join(unexpected[:3])})")
    if mismatched:
        key = mismatched[0]
        problems.append(
            f"{len(mismatched)} shape mismatches (first: {key} {tuple(tensors[key].shape)}"
            f" vs {tuple(expected[key].shape)})"
        )
    if problems:
        raise WeightsError(f"{path}: does not fit model {_describe(model)}: {'; '.join(problems)}")
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise WeightsError(f"{path}: {len(broken)} tensors hold NaN or infinite values (first: {broken[0]})")
    return {k: v.to(expected[k].dtype) for k, v in tensors.items()}


def load_weights(model: nn.Module, path: str | os.PathLike, *, reset_classifier: bool = False) -> dict[str, str]:
    """Load a weight file (format detected from the file) into `model`; on any mismatch the model is unchanged.

    `reset_classifier=True` loads everything but the classifier, for fine-tuning on other classes.

    Example:
        >>> meta = load_weights(create_model("resnet50"), "resnet50-0676ba61.pth")
    """
    tensors, metadata = read_state_dict(path)
    apply_state_dict(model, tensors, path, reset_classifier=reset_classifier)
    return metadata


def apply_state_dict(
    model: nn.Module, tensors: dict[str, torch.Tensor], source: str | os.PathLike, *, reset_classifier: bool = False
) -> None:
    """Load tensors already in our names (from `read_state_dict`) after every check passes; else change nothing."""
    model.load_state_dict(_check(model, tensors, Path(source), reset_classifier), strict=True)


def save_safetensors(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write a state_dict as safetensors, atomically: a crash leaves the old file or none, never half of one."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    metadata = {k: str(v) for k, v in metadata.items()}
    return atomic_write(Path(path), lambda temporary: save_file(tensors, temporary, metadata=metadata))


def convert(
    source: str | os.PathLike,
    destination: str | os.PathLike,
    model_name: str,
    *,
    metadata: dict[str, str] | None = None,
    **overrides: object,
) -> Path:
    """Convert any supported weight file for `model_name` to `.safetensors`, checked by loading it first; `metadata`
    (classes, normalization) fills in what the file itself does not say.

    Example:
        >>> convert("ResNet50V2.h5", "resnet50v2.safetensors", model_name="resnet50v2")
    """
    from resnets.models import create_model

    if Path(destination).suffix != ".safetensors":
        raise WeightsError(f"{destination}: convert writes .safetensors; name the destination *.safetensors")
    if Path(destination).exists() and Path(destination).resolve() == Path(source).resolve():
        raise WeightsError(f"{destination}: is the source itself; write the converted weights to another file")
    if Path(destination).is_dir():
        raise WeightsError(f"{destination}: is a folder; name the .safetensors file to write")
    model = create_model(model_name, **overrides)
    metadata = {**(metadata or {}), **load_weights(model, source), "model": model_name, "converted_by": "resnets"}
    # The settings the net was built with travel with it: without them it would be read back as the plain net
    # (another pooling loads without complaint, and gives other answers). The classifier's size is in its weights.
    built_with = {key: value for key, value in overrides.items() if key != "num_classes"}
    metadata["model_overrides"] = json.dumps(built_with, default=str)
    return save_safetensors(model.state_dict(), destination, metadata)
