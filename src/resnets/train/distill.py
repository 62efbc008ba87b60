"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): the student learns the labels and, beside them, a trained
teacher's outputs softened by a temperature. A small net taught by a deeper one beats the same net trained alone.

Several trained nets may teach together (`--teacher resnet32,resnet44,resnet56`): the student follows the mean of
their logits, a stronger teacher than any one of them.

On a CPU with int8 dot products (VNNI) a long run serves its teacher as int8 inference models (`--teacher-int8`):
the teacher's forward pass is about half of a distilled step, and it is the half that needs no gradients.

Example:
    >>> teacher = load_teacher("runs/r56/model.safetensors", classes=classes, mean=mean, std=std, image_size=32)
    >>> loss = DistillationLoss(weight=0.9, temperature=4.0)(student(x), labels, teacher(x))
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from resnets.hardware import cpu_has_vnni
from resnets.inference import optimize_for_inference
from resnets.models import fold_batchnorm
from resnets.train.run_folder import RunFolder
from resnets.weights.pretrained import PRETRAINED, load_trained, pretrained_for, sha256_of


class TeacherNet(nn.Module):
    """A trained net, frozen in eval mode, that reads the student's batches: they are normalized with the student's
    statistics, so each is first mapped to the teacher's (the same images, two normalizations). Its batch norms are
    folded into the convolutions before them: the teacher's forward pass is half of a distilled step's cost, and
    folding takes an eighth off it, compiling two fifths of the rest (resnet56, batch 128, bf16, one thread)."""

    def __init__(
        self, net: nn.Module, scale: torch.Tensor, shift: torch.Tensor, description: str, sha256: str = ""
    ) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.register_buffer("scale", scale.view(1, -1, 1, 1))
        self.register_buffer("shift", shift.view(1, -1, 1, 1))
        self.description = description
        self.sha256 = sha256  # of its weights file: a resumed run checks that its teacher is still the same
        self.eval()

    def train(self, mode: bool = True) -> TeacherNet:
        return super().train(False)  # the teacher answers as it was trained, whatever mode the loop sets

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(self.renormalize(images))

    def renormalize(self, images: torch.Tensor) -> torch.Tensor:
        """The student's normalized images as the teacher was trained to read them."""
        return images * self.scale + self.shift


class TeacherEnsemble(nn.Module):
    """Several teachers answering as one: the mean of their logits (each reads the student's batches through its own
    normalization). An ensemble is a stronger teacher than any of its members, and its members may be the student's
    own net: distilling a net from an ensemble that holds it still helps (Furlanello et al., 2018)."""

    def __init__(self, members: Sequence[TeacherNet]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.description = "the mean of " + ", ".join(member.description for member in members)
        # One fingerprint for the whole set: a resumed run refuses it if any member's weights changed.
        self.sha256 = hashlib.sha256(",".join(member.sha256 for member in members).encode()).hexdigest()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(images) for member in self.members]).mean(0)


def int8_teacher_pays(asked: bool | None, device: torch.device, compiled: bool) -> bool:
    """Whether to serve the teacher as int8: as asked, or (unset) in a CPU run long enough to compile, where the CPU
    has VNNI (on AVX2 alone int8 sums go through 16 bits) and ONNX Runtime is installed.

    Example:
        >>> int8_teacher_pays(None, torch.device("cuda"), compiled=True)
        False
    """
    if asked is not None:
        if asked and device.type != "cpu":
            raise ValueError(f"--teacher-int8 serves the teacher on the CPU, not on {device.type}")
        return asked
    has_runtime = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
    return device.type == "cpu" and compiled and cpu_has_vnni() and has_runtime


def served_teacher(
    teacher: TeacherNet | TeacherEnsemble, calibration: torch.Tensor, *, dtype: str = "int8", batch_size: int = 128
) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    """The teacher as inference models at `dtype` (int8 or fp32), each served by the runtime that runs it fastest
    here on batches of the student's `batch_size`, checked and, for int8, calibrated on `calibration` (a few hundred
    of the student's normalized training images); and, in words, what serves it. Its softened int8 outputs stay
    close to the fp32 teacher's (tests/test_distill.py bounds the gap for resnet56). In fp32 this is for CPUs where
    int8 does not pay: on an AVX2-only AMD Zen1 core OpenVINO ran resnet56 at 148 img/s where the compiled torch
    module ran 88.

    Example:
        >>> teach, served_by = served_teacher(load_teacher("resnet56", **student), images[:256])
    """
    members = list(teacher.members) if isinstance(teacher, TeacherEnsemble) else [teacher]
    served = [
        (
            member,
            optimize_for_inference(
                member.net, dtype, calibration=member.renormalize(calibration), batch_size=batch_size
            ),
        )
        for member in members
    ]

    def run(images: torch.Tensor) -> torch.Tensor:
        return torch.stack([fast(member.renormalize(images)) for member, fast in served]).mean(0).to(images.device)

    return run, f"{dtype} (" + ", ".join(sorted({fast.runtime for _, fast in served})) + ")"


def load_teacher(
    spec: str,
    *,
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    named_by: str = "--teacher ",
) -> TeacherNet | TeacherEnsemble:
    """The teacher named by `--teacher`: a weights file that `resnets train` wrote (the net named in its metadata),
    the run folder that holds one, or a registry name whose shipped weights are used; several, comma-separated, teach
    as one (the mean of their logits). Each must know the student's classes, in the same order, and take images of the
    same size. `named_by` starts each error: how the caller's user named the spec.

    Example:
        >>> load_teacher("resnet32,resnet44,resnet56", classes=cifar_classes, mean=mean, std=std, image_size=32)
    """
    kw = dict(classes=classes, mean=mean, std=std, image_size=image_size, named_by=named_by)
    specs = split_teachers(spec, named_by=named_by)
    if len(specs) == 1:
        return _load_one_teacher(specs[0], **kw)
    return TeacherEnsemble([_load_one_teacher(part, **kw) for part in specs])


def split_teachers(spec: str, *, named_by: str = "--teacher ") -> list[str]:
    """The nets a comma-separated teacher spec names, each once; an empty name or a repeated one is refused.

    Example:
        >>> split_teachers("resnet32, resnet44")
        ['resnet32', 'resnet44']
    """
    specs = [part.strip() for part in spec.split(",")]
    if not all(specs):
        raise ValueError(f"{named_by}{spec}: an empty name" + (" between commas" if len(specs) > 1 else ""))
    if len(set(specs)) < len(specs):
        raise ValueError(f"{named_by}{spec}: names a net twice")
    return specs


def _load_one_teacher(
    spec: str,
    *,
    classes: Sequence[str],
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    named_by: str,
) -> TeacherNet:
    """One teacher: a weights file that `resnets train` wrote (the net named in its metadata), the run folder that
    holds one, or a registry name whose shipped weights are used."""
    path = Path(spec)
    if path.is_dir():
        path = RunFolder(path).model_path
        if not path.is_file():
            raise ValueError(f"{named_by}{spec}: the folder holds no {path.name} (has that run finished?)")
    if path.is_file():
        model, card = load_trained(path)  # the net its metadata names
        origin, sha256 = f"{model.name} from {path}", sha256_of(path)
    elif spec in PRETRAINED:
        model, card = load_trained(pretrained_for(spec).path, spec)
        origin, sha256 = f"{spec} (shipped weights)", PRETRAINED[spec].sha256
    else:
        shipped = ", ".join(sorted(PRETRAINED))
        raise ValueError(f"{named_by}{spec}: neither a weights file nor a net with shipped weights ({shipped})")
    if list(card.classes) != list(classes):
        raise ValueError(f"{named_by}{spec}: its classes {card.classes[:4]}… are not the data's, in order")
    if card.image_size != image_size:
        raise ValueError(f"{named_by}{spec}: takes {card.image_size}px images, the student {image_size}px")
    student_mean, student_std = torch.tensor(mean), torch.tensor(std)
    teacher_mean, teacher_std = torch.tensor(card.mean), torch.tensor(card.std)
    scale = student_std / teacher_std
    shift = (student_mean - teacher_mean) / teacher_std
    return TeacherNet(fold_batchnorm(model), scale, shift, origin, sha256)


class DistillationLoss:
    """(1 - weight) x cross-entropy with the labels + weight x T² x KL(teacher's softened outputs ‖ student's).
    The T² keeps the soft term's gradients on the scale of the hard term's whatever the temperature.

    Example:
        >>> DistillationLoss(weight=0.9, temperature=4.0)(logits, labels, teacher_logits)
    """

    def __init__(self, weight: float, temperature: float, label_smoothing: float = 0.0) -> None:
        self.weight, self.temperature, self.label_smoothing = weight, temperature, label_smoothing

    def __call__(self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
        return self.with_cross_entropy(logits, labels, teacher_logits)[0]

    def with_cross_entropy(
        self, logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss, and its cross-entropy with the labels alone: the figure a plain run's training loss compares
        with."""
        hard = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        t = self.temperature
        soft = F.kl_div(
            F.log_softmax(logits / t, dim=1),
            F.log_softmax(teacher_logits.float() / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        return (1 - self.weight) * hard + self.weight * t * t * soft, hard
