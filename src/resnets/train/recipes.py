"""Training recipes: named, printable dataclasses; every field is also a `resnets train` flag.

Example:
    >>> recipe = get_recipe("cifar-paper", epochs=10)
    >>> recipe.lr_at(step=0, steps_per_epoch=352, depth=110)
    0.01
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from typing import Any


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, schedule, augmentation, precision. Units in the comments."""

    name: str = "custom"
    epochs: float = 30.0  # passes over the training split (ignored when `iterations` is set)
    iterations: int = 0  # total optimizer steps; 0 = use `epochs`
    batch_size: int = 128  # global: split across DDP processes
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 1e-4  # L2 penalty, applied by SGD
    decay_norm_and_bias: bool = True  # the paper decays every weight; modern recipes skip BN and biases
    schedule: str = "step"  # step | onecycle | cosine
    milestones: tuple[float, ...] = ()  # step schedule: lr x gamma at these points ...
    milestone_unit: str = "iterations"  # ... counted in iterations | epochs
    gamma: float = 0.1  # step schedule: the factor at each milestone
    warmup_iterations: int = 0  # linear warm-up (onecycle, cosine) or constant warm-up lr (step)
    warmup_lr: float = 0.0  # step schedule: constant lr during warm-up ...
    warmup_min_depth: int = 0  # ... only for nets at least this deep (the paper's 110-layer trick)
    label_smoothing: float = 0.0  # share of the target spread over all classes
    ema_decay: float = 0.0  # also keep an exponential moving average of the weights, evaluated and saved; 0 = off
    augment: str = "auto"  # auto | cifar (pad 4, crop, flip) | imagenet (random-resized crop, flip) | none
    image_size: int = 0  # 0 = the model's natural input size
    val_fraction: float = 0.1  # stratified hold-out when the data has no val folder (5,000 of CIFAR-10's 50,000)
    eval_flip: bool = False  # evaluate as the mean of the image and its mirror
    eval_every: int = 0  # also evaluate every N steps inside an epoch (curves over iterations); 0 = once per epoch
    precision: str = "auto"  # auto (bf16 where native) | fp32 | bf16 | fp16
    channels_last: bool = True  # NHWC tensors: faster convolutions on CPU and tensor cores
    compile: bool = False  # torch.compile the training step (inductor)
    seed: int = 0  # weights, split and augmentation all follow it
    log_every: int = 10  # a log line every N batches (seed 001)
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)

    def steps(self, steps_per_epoch: int) -> int:
        return self.iterations or math.ceil(self.epochs * steps_per_epoch)

    def lr_at(self, step: int, steps_per_epoch: int, depth: int = 0) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        total = self.steps(steps_per_epoch)
        warmup = self.warmup_iterations if depth >= self.warmup_min_depth else 0
        if self.schedule == "step":
            if step < warmup and self.warmup_lr > 0:
                return self.warmup_lr
            per_unit = {"iterations": 1, "epochs": steps_per_epoch}.get(self.milestone_unit)
            if per_unit is None:
                raise ValueError(f"milestone_unit {self.milestone_unit!r} is not one of iterations, epochs")
            marks = [m * per_unit for m in self.milestones]
            return self.lr * self.gamma ** sum(step >= m for m in marks)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if self.schedule == "onecycle":
            return self.lr * max(0.0, 1.0 - progress)
        if self.schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        raise ValueError(f"schedule {self.schedule!r} is not one of step, onecycle, cosine")

    def describe(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"Recipe({fields})"


RECIPES: dict[str, Recipe] = {
    # ResNet paper, Sec. 4.2: batch 128, lr 0.1 / 10 at 32k and 48k iterations, stop at 64k, wd 1e-4,
    # momentum 0.9; lr 0.01 for the first 400 iterations of the 110-layer and deeper nets.
    "cifar-paper": Recipe(
        name="cifar-paper",
        iterations=64_000,
        milestones=(32_000, 48_000),
        warmup_iterations=400,
        warmup_lr=0.01,
        warmup_min_depth=110,
        augment="cifar",
    ),
    # ResNet paper, Sec. 3.4: batch 256, lr 0.1 / 10 every 30 epochs, wd 1e-4, 90 epochs (the paper stops at 60e4
    # iterations, about 120 epochs, dividing on plateaus; torchvision's fixed schedule is what people run).
    "imagenet-paper": Recipe(
        name="imagenet-paper",
        epochs=90,
        batch_size=256,
        milestones=(30, 60),
        milestone_unit="epochs",
        augment="imagenet",
    ),
    # The fastest way we have found to the paper's CIFAR accuracy on a 2-core CPU: 30 epochs, linear warm-up then
    # cosine, nesterov, wd 5e-4 on weights only, evaluation averaged over a horizontal flip.
    "cifar-fast": Recipe(
        name="cifar-fast",
        epochs=30,
        lr=0.1,
        nesterov=True,
        weight_decay=5e-4,
        decay_norm_and_bias=False,
        schedule="cosine",
        warmup_iterations=700,
        augment="cifar",
        eval_flip=True,
    ),
}


def field_help() -> dict[str, str]:
    """Each Recipe field's comment in the class body, for `--help`: the comments stay the one place it is explained."""
    pattern = re.compile(r"^\s+(\w+): [^=]+=[^#]*#\s*(.+)$")
    return {m[1]: m[2] for line in inspect.getsource(Recipe).splitlines() if (m := pattern.match(line))}


def get_recipe(name: str, **overrides: Any) -> Recipe:
    """A named recipe with any field overridden."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}")
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"recipe has no field {unknown[0]!r}")
    return dataclasses.replace(RECIPES[name], **overrides)
