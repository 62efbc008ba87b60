"""Weights that ship inside the package, checked against their sha256 before they load.

Example:
    >>> model = create_model("resnet20", pretrained=True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from resnets.models import ResNet, get_config, get_entry
from resnets.models import create_model as build_model
from resnets.weights.loading import apply_state_dict, load_weights, read_state_dict
from resnets.weights.metadata import WeightsMetadata
from resnets.weights.readers import WeightsError

FILES = Path(__file__).parent / "files"


@dataclasses.dataclass(frozen=True)
class Pretrained:
    """A shipped weight file: where it is, its checksum, and how it was trained and measured.

    Class names and input normalization travel in the file's own metadata (see `resnets.deploy.Predictor`).
    """

    model: str
    file: str  # relative to resnets/weights/files, or absolute
    sha256: str
    num_classes: int
    metrics: dict[str, float]
    command: str  # how the weights were made

    @property
    def path(self) -> Path:
        return FILES / self.file


def _zoo_run(net: str, sha256: str, top1: float, top5: float) -> Pretrained:
    """A net from the `zoo` depth runs (cifar-fast + Cutout 16, 180 epochs); its run is in docs/results/NET-cifar10."""
    return Pretrained(
        model=net,
        file=f"{net}-cifar10.safetensors",
        sha256=sha256,
        num_classes=10,
        metrics={"val_top1": top1, "val_top5": top5},
        command=(
            "resnets reproduce depth --data cifar10-train-jpg.tar.gz --budget zoo --out docs/results --runs RUNS "
            f"(its {net} run: resnets train --model {net} --recipe cifar-fast --epochs 180 --cutout 16)"
        ),
    )


def _distilled_run(net: str, sha256: str, top1: float, top5: float, *, epochs: int, flags: str = "") -> Pretrained:
    """A net taught by the mean of the zoo resnet32, resnet44 and resnet56 (cifar-fast + Cutout 16). The zoo resnet56
    is named by its run folder: the name `resnet56` now means the distilled one (the runs themselves named it)."""
    return Pretrained(
        model=net,
        file=f"{net}-cifar10.safetensors",
        sha256=sha256,
        num_classes=10,
        metrics={"val_top1": top1, "val_top5": top5},
        command=(
            f"resnets train --model {net} --data cifar10-train-jpg.tar.gz --recipe cifar-fast --epochs {epochs} "
            f"--cutout 16 --teacher resnet32,resnet44,training/reproduce/zoo/resnet56{flags} --out RUN"
        ),
    )


# Weights made by `resnets train` on CIFAR-10: resnet32 and resnet44 on the 45,000-image training split (5,000 held
# out, seed 0); resnet20 and resnet56 on all 50,000, their recipe chosen and measured on that split first.
PRETRAINED: dict[str, Pretrained] = {
    # On every image (--val-fraction 0): its "val" figure (fp32, flip-averaged; 92.54% one view) is on images it
    # trained on, kept so that the file is checked to evaluate as it did. The recipe's held-out measure is its 45k/5k
    # run: 91.30%, 91.84% flip-averaged (docs/results/resnet20-45k-ensemble-distilled); this run in
    # docs/results/resnet20-cifar10
    "resnet20": _distilled_run(
        "resnet20",
        "57983775aeb0b8bc637a6f20924140a6967346177cb9f04295f66b8ca601d91e",
        0.9318,
        0.9974,
        epochs=150,
        flags=" --val-fraction 0",
    ),
    # The zoo depth runs; held-out 5,000, fp32, averaged over a horizontal flip (one view: 91.02%, 91.00%).
    **{
        net: _zoo_run(net, sha256, top1, top5)
        for net, sha256, top1, top5 in (
            ("resnet32", "fb4943c561feb925144e725737b85308f27a463b1740fb20f4f2512af62fdafa", 0.918, 0.9966),
            ("resnet44", "83e61bd0151baa937cb8b7907a777a52da56142a6dbdd1362c2a16a2fc32942c", 0.9208, 0.9988),
        )
    },
    # On every image, as resnet20: its "val" figure (fp32, flip-averaged; 93.94% one view) is on images it trained on.
    # The recipe's held-out measure is its 45k/5k run: 92.84%, 93.10% flip-averaged (the zoo resnet56: 91.88%,
    # 92.74%), in docs/results/resnet56-ensemble-distilled; this run in docs/results/resnet56-cifar10
    "resnet56": _distilled_run(
        "resnet56",
        "47412cf368b2cd12a58762ffb988939b443dceadaea3c2e32f0d1cb026192888",
        0.9418,
        0.9982,
        epochs=180,
        flags=" --val-fraction 0",
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pretrained_for(name: str) -> Pretrained:
    if name not in PRETRAINED:
        get_entry(name)  # a misspelt name is called unknown, with suggestions, before "nothing ships for it"
        shipped = ", ".join(sorted(PRETRAINED)) or "none yet"
        raise WeightsError(f"no pretrained weights ship for {name!r} (shipped: {shipped}); pass weights=PATH instead")
    spec = PRETRAINED[name]
    if not spec.path.is_file():
        raise WeightsError(f"{spec.path}: shipped weights for {name!r} are missing from the installation")
    actual = sha256_of(spec.path)
    if actual != spec.sha256:
        raise WeightsError(f"{spec.path}: sha256 {actual[:12]}... does not match the registry's {spec.sha256[:12]}...")
    return spec


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    weights: str | os.PathLike | None = None,
    reset_classifier: bool = False,
    **overrides: Any,
) -> ResNet:
    """Build a registered network, optionally with shipped (`pretrained=True`) or any (`weights=PATH`) weights.

    Example:
        >>> model = create_model("resnet50v2", weights="ResNet50V2.h5")
    """
    if pretrained and weights is not None:
        raise ValueError("pass either pretrained=True or weights=PATH, not both")
    if pretrained:
        spec = pretrained_for(name)
        overrides.setdefault("num_classes", spec.num_classes)
        weights = spec.path
    model = build_model(name, **overrides)
    if weights is not None:
        load_weights(model, weights, reset_classifier=reset_classifier)
    return model


def _check_same_net(path: str | os.PathLike, model_name: str, meta: dict[str, str]) -> None:
    """A file whose metadata names another net is read as `model_name` only where the two are built alike (an
    alias); otherwise the net it holds would be evaluated under the name asked for."""
    try:
        overrides = json.loads(meta.get("model_overrides", "{}"))
        held = get_config(meta["model"], **overrides)
        asked = get_config(model_name)
    except (ValueError, TypeError):
        return  # metadata this version cannot read, named when the file is parsed below
    if dataclasses.replace(held, num_classes=asked.num_classes) != asked:
        settings = ", ".join(f"{key}={value}" for key, value in overrides.items())
        described = meta["model"] + (f" ({settings})" if settings else "")
        raise WeightsError(f"{path}: holds {described}, not {model_name}; name {meta['model']} or leave model=NAME out")


def load_trained(
    path: str | os.PathLike, model_name: str | None = None, recorded: WeightsMetadata | None = None
) -> tuple[ResNet, WeightsMetadata]:
    """The net a trained weights file holds (the one its metadata names, or `model_name`), built to the file's
    classifier and settings and loaded, with what the file says of its classes, input size and normalization.
    `recorded`: what a run folder records of its checkpoint, for what the file itself does not say.

    Example:
        >>> model, card = load_trained("runs/r20/model.safetensors")
        >>> card.classes[:2]
        ['airplane', 'automobile']
    """
    if model_name is not None:
        get_entry(model_name)  # an unknown name fails before the file is read
    tensors, meta = read_state_dict(path)
    meta = {**(recorded.to_strings() if recorded else {}), **meta}
    if model_name and meta.get("model") and meta["model"] != model_name:
        _check_same_net(path, model_name, meta)
    model_name = model_name or meta.get("model") or ""
    if not model_name:
        raise WeightsError(f"{path}: the file does not name its net (no 'model' metadata); name it: model=NAME")
    entry = get_entry(model_name)
    if "fc.weight" not in tensors:
        raise WeightsError(f"{path}: has no classifier (fc.weight) to predict with")
    num_classes = tensors["fc.weight"].shape[0]
    card = WeightsMetadata.parse(meta, path, num_classes, default_size=entry.input_size[-1])
    if num_classes != 1000 and not {"mean", "std"} <= meta.keys():
        # ImageNet's normalization is a safe guess for a 1000-class file (torchvision's); for any other it is a guess
        warnings.warn(
            f"{path}: records no normalization; read with ImageNet's mean and std (a run of `resnets train`, or "
            "`convert` from one, records its own)",
            stacklevel=2,
        )
    model = build_model(model_name, num_classes=num_classes, **card.model_overrides)
    apply_state_dict(model, tensors, path)
    if meta.get("channel_order") == "bgr":  # a Keras v1 net: reverse the stem's input channels to take RGB
        with torch.no_grad():
            model.conv1.weight.copy_(model.conv1.weight.flip(1))
    return model, card
