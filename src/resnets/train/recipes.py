"""Training recipes: named, printable dataclasses; every field is also a `resnets train` flag.

Example:
    >>> recipe = get_recipe("cifar-paper", epochs=10)
    >>> recipe.lr_at(step=0, steps_per_epoch=352, depth=110)
    0.01
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import re
from typing import Any

from resnets.hardware import Precision


class Schedule(str, enum.Enum):
    """How the learning rate moves over the run."""

    STEP = "step"  # constant, times `gamma` at each milestone (the ResNet papers)
    ONECYCLE = "onecycle"  # linear warm-up, then linear to zero
    COSINE = "cosine"  # linear warm-up, then half a cosine to zero

    def __str__(self) -> str:
        return self.value


class MilestoneUnit(str, enum.Enum):
    """What the step schedule's milestones count."""

    ITERATIONS = "iterations"  # optimizer steps, as the CIFAR paper counts (32k, 48k)
    EPOCHS = "epochs"  # passes over the training split, as the ImageNet recipe counts (30, 60)

    def __str__(self) -> str:
        return self.value


class Augment(str, enum.Enum):
    """Training-time augmentation."""

    AUTO = "auto"  # cifar for small images (decoded into memory), imagenet for large ones
    CIFAR = "cifar"  # pad 4, random 32x32 crop, horizontal flip (ResNet paper, Sec. 4.2)
    IMAGENET = "imagenet"  # random-resized crop and flip (the torchvision recipe)
    NONE = "none"

    def __str__(self) -> str:
        return self.value


# The fields whose values are enum members, and the members allowed (int8 is not a training precision). Strings given
# for them become members; anything else is refused, naming the flag. `resnets train` takes its choices from here.
FIELD_CHOICES: dict[str, tuple[enum.Enum, ...]] = {
    "schedule": tuple(Schedule),
    "milestone_unit": tuple(MilestoneUnit),
    "augment": tuple(Augment),
    "precision": (Precision.AUTO, Precision.FP32, Precision.BF16, Precision.FP16),
}


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train: optimizer, schedule, augmentation, precision. Units in the comments. Every value is checked
    when the recipe is made, so a bad one fails before any data is read, naming its `resnets train` flag.

    Example:
        >>> Recipe(epochs=10, schedule="cosine").schedule
        <Schedule.COSINE: 'cosine'>
    """

    name: str = "custom"
    epochs: float = 30.0  # passes over the training split (ignored when `iterations` is set)
    iterations: int = 0  # total optimizer steps; 0 = use `epochs`
    batch_size: int = 128  # global: split across DDP processes
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum
    weight_decay: float = 1e-4  # L2 penalty, applied by SGD
    decay_norm_and_bias: bool = True  # the paper decays every weight; modern recipes skip BN and biases
    schedule: Schedule = Schedule.STEP  # step | onecycle | cosine
    milestones: tuple[float, ...] = ()  # step schedule: lr x gamma at these points ...
    milestone_unit: MilestoneUnit = MilestoneUnit.ITERATIONS  # ... counted in iterations | epochs
    gamma: float = 0.1  # step schedule: the factor at each milestone
    warmup_iterations: int = 0  # linear warm-up (onecycle, cosine) or constant warm-up lr (step)
    warmup_lr: float = 0.0  # step schedule: constant lr during warm-up ...
    warmup_min_depth: int = 0  # ... only for nets at least this deep (the paper's 110-layer trick)
    label_smoothing: float = 0.0  # share of the target spread over all classes
    ema_decay: float = 0.0  # also keep an exponential moving average of the weights, evaluated and saved; 0 = off
    teacher: str = ""  # distil from a trained net (a file, or a shipped net's name); a,b,c: their mean logits; "" = off
    distill_weight: float = 0.9  # with --teacher: the loss's share that follows the teacher's softened outputs
    distill_temperature: float = 4.0  # with --teacher: both nets' outputs are softened by it (Hinton et al.)
    teacher_int8: bool | None = None  # with --teacher: serve it as int8 (CPU); unset: in compiled runs on VNNI CPUs
    augment: Augment = Augment.AUTO  # auto | cifar (pad 4, crop, flip) | imagenet (random-resized crop, flip) | none
    cutout: int = 0  # also hide a square of this side at a random spot of each training image (16 on CIFAR); 0 = off
    image_size: int = 0  # 0 = the model's natural input size
    val_fraction: float = 0.1  # held out, stratified, without a val/ folder (0.1: 5,000 of CIFAR-10); 0 = train on all
    eval_flip: bool = False  # evaluate as the mean of the image and its mirror
    eval_every: int = 0  # also evaluate every N steps inside an epoch (curves over iterations); 0 = once per epoch
    precision: Precision = Precision.AUTO  # auto (bf16 where native) | fp32 | bf16 | fp16
    channels_last: bool = True  # NHWC tensors: faster convolutions on CPU and tensor cores
    compile: bool | None = None  # torch.compile the model (inductor); unset: for runs of 2,000+ steps, where it pays
    cuda_graphs: bool | None = None  # replay forward and backward as CUDA graphs; unset: on a GPU, in one process
    seed: int = 0  # initial weights, batch order and augmentation follow it; the held-out split does not
    log_every: int = 10  # a log line every N batches (seed 001)
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)

    def __post_init__(self) -> None:
        for name, allowed in FIELD_CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{_flag(name)} {value!r}: choose one of {', '.join(map(str, allowed))}")
            object.__setattr__(self, name, type(allowed[0])(value))
        object.__setattr__(self, "milestones", tuple(self.milestones))
        for name, value, valid, rule in (
            ("epochs", self.epochs, self.epochs > 0 or self.iterations > 0, "must be > 0"),
            ("iterations", self.iterations, self.iterations >= 0, "must be >= 0 (0: use --epochs)"),
            ("batch_size", self.batch_size, self.batch_size >= 1, "must be >= 1"),
            ("lr", self.lr, self.lr > 0, "must be > 0"),
            ("momentum", self.momentum, 0 <= self.momentum < 1, "must be in [0, 1)"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, "must be >= 0"),
            ("milestones", self.milestones, all(m > 0 for m in self.milestones), "must all be > 0"),
            ("gamma", self.gamma, 0 < self.gamma <= 1, "must be in (0, 1]"),
            ("warmup_iterations", self.warmup_iterations, self.warmup_iterations >= 0, "must be >= 0"),
            ("warmup_lr", self.warmup_lr, self.warmup_lr >= 0, "must be >= 0"),
            ("warmup_min_depth", self.warmup_min_depth, self.warmup_min_depth >= 0, "must be >= 0"),
            ("label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "must be in [0, 1)"),
            ("ema_decay", self.ema_decay, 0 <= self.ema_decay < 1, "must be in [0, 1) (0: off)"),
            ("distill_weight", self.distill_weight, 0 <= self.distill_weight <= 1, "must be in [0, 1]"),
            ("distill_temperature", self.distill_temperature, self.distill_temperature > 0, "must be > 0"),
            ("cutout", self.cutout, self.cutout >= 0, "must be >= 0 (0: off)"),
            ("image_size", self.image_size, self.image_size == 0 or self.image_size >= 8, "must be 0 or >= 8"),
            ("val_fraction", self.val_fraction, 0 <= self.val_fraction < 1, "must be in [0, 1)"),
            ("eval_every", self.eval_every, self.eval_every >= 0, "must be >= 0"),
            ("log_every", self.log_every, self.log_every >= 0, "must be >= 0"),
            ("cuda_graphs", self.cuda_graphs, not (self.cuda_graphs and self.compile), "not with --compile"),
        ):
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{_flag(name)} {value!r}: must be a finite number")
            if not valid:
                raise ValueError(f"{_flag(name)} {value!r}: {rule}")

    def steps(self, steps_per_epoch: int) -> int:
        return self.iterations or math.ceil(self.epochs * steps_per_epoch)

    def lr_at(self, step: int, steps_per_epoch: int, depth: int = 0) -> float:
        """Learning rate for optimizer step `step` (0-based)."""
        total = self.steps(steps_per_epoch)
        warmup = self.warmup_iterations if depth >= self.warmup_min_depth else 0
        if self.schedule == Schedule.STEP:
            if step < warmup and self.warmup_lr > 0:
                return self.warmup_lr
            per_unit = 1 if self.milestone_unit == MilestoneUnit.ITERATIONS else steps_per_epoch
            marks = [m * per_unit for m in self.milestones]
            return self.lr * self.gamma ** sum(step >= m for m in marks)
        if step < warmup:
            return self.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if self.schedule == Schedule.ONECYCLE:
            return self.lr * max(0.0, 1.0 - progress)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def describe(self) -> str:
        fields = ", ".join(f"{f.name}={_plain(getattr(self, f.name))!r}" for f in dataclasses.fields(self))
        return f"Recipe({fields})"

    def to_dict(self) -> dict[str, Any]:
        """Plain values (enums as their strings), for config.json."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def flags(self) -> list[str]:
        """The `resnets train` flags that make this recipe: `--recipe NAME`, then each field that differs from the
        named recipe (the logging fields aside: they change no weight).

        Example:
            >>> get_recipe("cifar-fast", epochs=180, cutout=16).flags()
            ['--recipe', 'cifar-fast', '--epochs', '180', '--cutout', '16']
        """
        base = RECIPES.get(self.name, Recipe(name=self.name))
        words = ["--recipe", self.name]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("name", "log_every", "tensorboard") or value == getattr(base, field.name):
                continue
            flag = _flag(field.name)
            if isinstance(value, bool):
                words.append(flag if value else "--no-" + flag[2:])
            elif isinstance(value, tuple):
                words += [flag, *map(_number, value)]
            elif value is not None:  # compile's None (decide by run length) is every recipe's default
                words += [flag, _number(value) if isinstance(value, float | int) else str(_plain(value))]
        return words


def _number(value: float) -> str:
    """As short as it reads back exactly: 180.0 -> '180', 0.0005 -> '0.0005', 2_000_000 -> '2000000'."""
    if isinstance(value, int) or value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    short = f"{value:g}"
    return short if float(short) == value else repr(value)


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


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
        augment=Augment.CIFAR,
    ),
    # ResNet paper, Sec. 3.4: batch 256, lr 0.1 / 10 every 30 epochs, wd 1e-4, 90 epochs (the paper stops at 60e4
    # iterations, about 120 epochs, dividing on plateaus; torchvision's fixed schedule is what people run).
    "imagenet-paper": Recipe(
        name="imagenet-paper",
        epochs=90,
        batch_size=256,
        milestones=(30, 60),
        milestone_unit=MilestoneUnit.EPOCHS,
        augment=Augment.IMAGENET,
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
        schedule=Schedule.COSINE,
        warmup_iterations=700,
        augment=Augment.CIFAR,
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
    return dataclasses.replace(RECIPES[name], **overrides)  # runs the checks again on the new values
