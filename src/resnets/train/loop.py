"""The training engine: one loop, read top to bottom. Precision, device, data and distribution are set up
once, before it; checkpoints hold everything needed to continue exactly.

Example:
    >>> train("resnet20", "../shared/data/cifar10-train-jpg.tar.gz", "runs/r20", get_recipe("cifar-fast"))
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from resnets.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSet,
    channel_stats,
    load_dataset,
    make_batches,
    stratified_split,
)
from resnets.errors import ResnetsError, first_line
from resnets.hardware import can_compile, describe_device, resolve_device, resolve_precision, steady_host_memory
from resnets.models import create_model, get_entry
from resnets.train.checkpoint import load_checkpoint, save_checkpoint
from resnets.train.cuda_graphs import GraphedForward, cuda_graphs_pay
from resnets.train.distill import (
    DistillationLoss,
    TeacherEnsemble,
    TeacherNet,
    int8_teacher_pays,
    load_teacher,
    served_teacher,
)
from resnets.train.evaluate import evaluate
from resnets.train.recipes import Augment, Recipe
from resnets.train.run_folder import RunFolder, hardware_history
from resnets.weights import save_safetensors
from resnets.weights.metadata import WeightsMetadata


def weights_average(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of `model`'s weights and BN statistics (torch's AveragedModel), whose decay
    warms up as min(decay, (1 + n) / (10 + n)) after n updates, as TensorFlow's and timm's do: with a fixed 0.999
    a third of the random initial weights would still be in the average after 1,000 steps.

    Example:
        >>> average = weights_average(model, 0.999); average.update_parameters(model)
    """

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        step_decay = min(decay, (1 + float(updates)) / (10 + float(updates)))
        torch.optim.swa_utils.get_ema_multi_avg_fn(step_decay)(averaged, current, updates)

    return torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=update, use_buffers=True)


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """How a `train` call ended: finished, or stopped at `step` (by a signal or `stop_after_steps`) and
    checkpointed there for `resume=True`. `metrics` is the last finished epoch's record ({} before the first).

    Example:
        >>> result = train("resnet20", "cifar10/", "runs/r20", get_recipe("cifar-fast"))
        >>> result.metrics["val_top1"] if not result.stopped else f"stopped at step {result.step}"
    """

    step: int
    metrics: dict[str, Any]
    stopped: bool = False
    signal: int | None = None  # the signal that stopped it, if one did

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class TrainingError(ResnetsError, RuntimeError):
    """A run that cannot go on (a non-finite loss): one line says why and what was kept."""


@dataclasses.dataclass
class Distributed:
    """This process's place in a `torchrun` job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def setup(cls, device: torch.device) -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size == 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks after each step, so it can checkpoint and leave."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


COMPILE_MIN_STEPS = 2_000  # compiling costs 20-60 s per batch shape on 2 cores; ~20% off each step repays it


def compile_pays(asked: bool | None, device: torch.device, total_steps: int) -> bool:
    """Whether to torch.compile the model: as asked, or (unset) for runs long enough to repay the compile time,
    where inductor can run (on CPU it needs a C++ compiler).

    Example:
        >>> compile_pays(None, torch.device("cpu"), 64_000)
        True
    """
    if asked is not None:
        return asked
    return total_steps >= COMPILE_MIN_STEPS and (device.type == "cuda" or (device.type == "cpu" and can_compile()))


def _param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    if recipe.decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def _stretches(previous_config: Path | None, run_info: dict, step: int) -> list[dict]:
    """The run's hardware history: the earlier config's stretches, plus this one if the hardware changed."""
    earlier: list[dict] = []
    if previous_config is not None and previous_config.exists():
        earlier = hardware_history(json.loads(previous_config.read_text()))
    current = {"device": run_info["device"], "precision": run_info["precision"], "from_step": step}
    if "teacher_served_by" in run_info:  # an int8 teacher's softened outputs differ slightly from a bf16 one's
        current["teacher_served_by"] = run_info["teacher_served_by"]
    kept = ("device", "precision", "teacher_served_by")
    if earlier and all(earlier[-1].get(key) == current.get(key) for key in kept):
        return earlier
    return [*earlier, current]


@dataclasses.dataclass
class RunData:
    """The data side of a run, prepared once: splits, batches, normalization and what config.json records."""

    train_set: ImageSet
    val_set: ImageSet
    train_batches: Any
    val_batches: Any | None  # None: every image trains (--val-fraction 0), nothing is validated
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: int
    skipped: int


def prepare_data(
    data: str | os.PathLike,
    recipe: Recipe,
    *,
    entry,
    ranks: Distributed,
    cache_dir,
    skip_bad_images: bool,
    device: torch.device | str = "cpu",
) -> RunData:
    """Read the images, hold out the fixed stratified split (unless the data has a val/ folder) and make the
    batches: uint8 tensors augmented a batch at a time for small images (on a GPU, kept and augmented there: one
    CPU core cannot feed it), DataLoader workers for large ones."""
    train_set, val_set = load_dataset(data, cache_dir=cache_dir, skip_bad_images=skip_bad_images)
    skipped = train_set.skipped + (val_set.skipped if val_set is not None else 0)
    if val_set is None and recipe.val_fraction == 0:
        val_set = train_set.subset(torch.arange(0))  # every image trains (the shipped file of a chosen recipe)
    elif val_set is None:
        if recipe.val_fraction * len(train_set) / len(train_set.classes) < 1:
            raise ValueError(
                f"--val-fraction {recipe.val_fraction}: holds out no image of some class from {len(train_set)} "
                "images (raise it, give the data a val/ folder, or train on every image with 0)"
            )
        # The hold-out belongs to the data, not to the run: runs that differ only in seed are measured on the same
        # images, so their errors compare.
        train_set, val_set = stratified_split(train_set, recipe.val_fraction)
    if recipe.batch_size % ranks.world_size:
        raise ValueError(f"batch_size {recipe.batch_size} does not split evenly over {ranks.world_size} processes")
    small = train_set.images is not None
    mean, std = channel_stats(train_set.images) if small else (IMAGENET_MEAN, IMAGENET_STD)
    if small and recipe.image_size not in (0, train_set.images.shape[-1]):
        # decoded images are batched as they are: a size they were not trained at must not reach the weights' card
        raise ValueError(
            f"--image-size {recipe.image_size}: the data's {train_set.images.shape[-1]}px images are decoded into "
            "memory and train at their own size (no resizing); leave --image-size out"
        )
    image_size = recipe.image_size or (train_set.images.shape[-1] if small else entry.input_size[-1])
    if recipe.cutout > image_size:
        raise ValueError(f"--cutout {recipe.cutout}: larger than the {image_size}px images it would hide")
    augment = recipe.augment if recipe.augment != Augment.AUTO else (Augment.CIFAR if small else Augment.IMAGENET)
    common = dict(mean=mean, std=std, image_size=image_size, seed=recipe.seed, skip_bad_images=skip_bad_images)
    train_batches = make_batches(
        train_set,
        recipe.batch_size,
        augment=augment != Augment.NONE,
        cutout=recipe.cutout,
        rank=ranks.rank,
        world_size=ranks.world_size,
        device=device,
        **common,
    )
    val_batches = make_batches(val_set, 256, augment=False, device=device, **common) if len(val_set) else None
    return RunData(train_set, val_set, train_batches, val_batches, tuple(mean), tuple(std), image_size, skipped)


@dataclasses.dataclass
class Progress:
    """Where the run is: what a checkpoint holds besides the weights, and what the metrics so far are."""

    epoch: int = 0
    position: int = 0  # batches of `epoch` already done
    step: int = 0
    history: list[dict] = dataclasses.field(default_factory=list)

    def as_state(self, epoch: int, position: int) -> dict:
        return {"epoch": epoch, "position": position, "step": self.step, "history": self.history}


class Window:
    """Training loss and accuracy summed since the last metrics record. On a GPU the sums stay on the device and
    are read (and the loss checked for inf/nan) every `sync_every` steps: reading waits for every queued kernel."""

    def __init__(self, device: torch.device) -> None:
        self.sync_every = 1 if device.type == "cpu" else 25
        self.loss_sum = torch.zeros((), device=device)
        self.cross_entropy_sum = torch.zeros((), device=device)  # a distilled run's loss without the teacher's term
        self.correct = torch.zeros((), dtype=torch.long, device=device)
        self.warmed_up = False
        self.reset()

    def reset(self) -> None:
        # seen: the images in the sums; steps and timed_images: those the clock covers, since `started`
        self.started, self.seen, self.steps, self.timed_images = time.perf_counter(), 0, 0, 0
        self.loss_sum.zero_()
        self.cross_entropy_sum.zero_()
        self.correct.zero_()

    def add(
        self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, cross_entropy: torch.Tensor | None = None
    ) -> None:
        self.loss_sum += loss.detach() * len(labels)
        if cross_entropy is not None:
            self.cross_entropy_sum += cross_entropy.detach() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()

    def count(self, images: int) -> None:
        """One step done. A process's first step compiles, calibrates an int8 teacher and fills the allocator: the
        clock starts after it, so that a record's pace (what `resnets status` plans with) is the run's own."""
        self.seen += images
        if not self.warmed_up:
            self.warmed_up, self.started = True, time.perf_counter()
            return
        self.steps += 1
        self.timed_images += images

    def check_finite(self, step: int, epoch: int, checkpoint_path: Path) -> None:
        """Stop before a diverged model is evaluated or checkpointed: the checkpoint on disk stays the last good one."""
        if not torch.isfinite(self.loss_sum):
            kept = (
                f"the last good checkpoint is kept at {checkpoint_path}"
                if checkpoint_path.is_file()
                else "no checkpoint was written, and the folder is left as it was"
            )
            raise TrainingError(
                f"loss became {self.loss_sum.item()} by step {step} (epoch {epoch + 1}); stopped, {kept}"
            )


class Trainer:
    """One run's model, optimizer, schedule and precision, set up once; `run` is the loop."""

    def __init__(
        self,
        model_name: str,
        recipe: Recipe,
        data: RunData,
        *,
        model_overrides: dict[str, Any],
        device: torch.device,
        dtype: torch.dtype,
        ranks: Distributed,
        folder: RunFolder,
    ) -> None:
        self.recipe, self.data, self.folder = recipe, data, folder
        self.device, self.dtype, self.ranks = device, dtype, ranks
        self.model = create_model(model_name, num_classes=len(data.train_set.classes), **model_overrides)
        self.memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
        self.model.to(device, memory_format=self.memory_format)
        self.optimizer = torch.optim.SGD(
            _param_groups(self.model, recipe),
            lr=recipe.lr,
            momentum=recipe.momentum,
            nesterov=recipe.nesterov,
            weight_decay=recipe.weight_decay,
            fused=device.type in ("cpu", "cuda"),  # one kernel over all parameters (3% of a resnet50 step on CPU)
        )
        # The average (BN statistics included) is what gets evaluated and saved: it smooths the last epochs' noise.
        self.ema = weights_average(self.model, recipe.ema_decay) if recipe.ema_decay else None
        self.served = self.ema.module if self.ema is not None else self.model
        self.criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
        self.teacher = self._load_teacher() if recipe.teacher else None
        self.distill = DistillationLoss(recipe.distill_weight, recipe.distill_temperature, recipe.label_smoothing)
        self.scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
        self.graphed = cuda_graphs_pay(recipe.cuda_graphs, device, ranks.world_size, compile_asked=recipe.compile)
        # A captured graph cannot hold autocast's cache of cast weights: each replay casts them again.
        self.autocast = torch.autocast(
            device.type, dtype=dtype, enabled=dtype != torch.float32, cache_enabled=not self.graphed
        )
        self.wrapped = nn.parallel.DistributedDataParallel(self.model) if ranks.world_size > 1 else self.model
        self.steps_per_epoch = len(data.train_batches)
        self.total_steps = recipe.steps(self.steps_per_epoch)
        self.compiled = not self.graphed and compile_pays(recipe.compile, device, self.total_steps)
        # One graph per batch shape (the epoch's last, shorter batch compiles once more): static shapes are fastest.
        self.forward = torch.compile(self.wrapped, dynamic=False) if self.compiled else self.wrapped
        if self.graphed:
            self.forward = GraphedForward(self.wrapped, required=bool(recipe.cuda_graphs))
        self.teach, self.teacher_served_by = self._teacher_runner()
        self.total_epochs = math.ceil(self.total_steps / self.steps_per_epoch)
        self.progress = Progress()
        self.window = Window(device)
        self.writer = None
        self.trained_on: list[dict] = []  # the hardware stretches, from config.json
        self.command = ""  # the `resnets train` line that makes this run, from config.json
        # What the checkpoint and the final weights say of themselves; the final file adds how it was made.
        self.card = WeightsMetadata(
            model=model_name,
            model_overrides=model_overrides,
            classes=data.train_set.classes,
            image_size=data.image_size,
            mean=tuple(data.mean),
            std=tuple(data.std),
        )

    def _load_teacher(self) -> TeacherNet | TeacherEnsemble:
        data = self.data
        teacher = load_teacher(
            self.recipe.teacher,
            classes=data.train_set.classes,
            mean=data.mean,
            std=data.std,
            image_size=data.image_size,
        )
        return teacher.to(self.device, memory_format=self.memory_format)

    def _teacher_runner(self) -> tuple[Any, str]:
        """How the teacher answers, and in words: int8 inference models where that pays or is asked for, the
        fastest fp32 runtime in a long fp32 CPU run, else compiled as the student is, else as it is."""
        if self.teacher is None:
            return None, ""
        batch_size = self.recipe.batch_size // self.ranks.world_size  # what each process's teacher answers
        if int8_teacher_pays(self.recipe.teacher_int8, self.device, self.compiled):
            return served_teacher(self.teacher, self._calibration_images(), dtype="int8", batch_size=batch_size)
        if self.compiled and self.device.type == "cpu" and self.dtype == torch.float32:
            # A long fp32 CPU run (an AVX2-only CPU): an inference runtime beats the compiled module there.
            return served_teacher(self.teacher, self._calibration_images(), dtype="fp32", batch_size=batch_size)
        precision = str(self.dtype).replace("torch.", "")
        if self.compiled:
            return torch.compile(self.teacher, dynamic=False), f"{precision} (torch compiled)"
        return self.teacher, f"{precision} (torch)"

    def _calibration_images(self, count: int = 256) -> torch.Tensor:
        """The first training batches, augmented as the teacher will see them, for int8 calibration."""
        batches = []
        for images, _ in self.data.train_batches.epoch(0):
            batches.append(images.cpu().float())
            if sum(map(len, batches)) >= count:
                break
        return torch.cat(batches)[:count]

    def resume(self) -> None:
        state = load_checkpoint(self.folder.checkpoint_path, self.model, self.optimizer, self.scaler, self.ema)
        self.progress = Progress(**state)
        if self.ranks.is_main:
            self.folder.rewrite_metrics(self.progress.history)  # records after the checkpoint belong to steps to rerun

    def lr_at(self, step: int) -> float:
        return self.recipe.lr_at(step, self.steps_per_epoch, self.model.config.depth)

    def step(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> torch.Tensor:
        """One optimizer step at `lr`: forward under autocast, the loss in fp32, backward, SGD, the average."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.device.type == "cuda" and images.device.type == "cpu":  # from pageable memory, a copy would wait
            images, labels = images.pin_memory(), labels.pin_memory()
        images = images.to(self.device, memory_format=self.memory_format, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with self.autocast:
            logits, teacher_logits = self._forward(images)
        if teacher_logits is None:
            loss, cross_entropy = self.criterion(logits.float(), labels), None
        else:
            loss, cross_entropy = self.distill.with_cross_entropy(logits.float(), labels, teacher_logits)
        self.window.add(loss, logits, labels, cross_entropy)
        if (self.progress.step + 1) % self.window.sync_every == 0:
            self.window.check_finite(self.progress.step, self.progress.epoch, self.folder.checkpoint_path)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.progress.step += 1
        self.window.count(len(labels))
        return loss

    def _forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's logits, and the teacher's where one teaches."""
        try:
            return self.forward(images), (self.teach(images) if self.teach is not None else None)
        except Exception as error:  # noqa: BLE001 - any failure to compile, when compiling was our own choice
            if not self.compiled or self.recipe.compile is not None:
                raise
            warnings.warn(f"torch.compile failed, training eagerly instead: {first_line(error, 200)}", stacklevel=2)
            self.compiled, self.forward = False, self.wrapped
            if self.teacher_served_by.endswith("(torch compiled)"):
                self.teach = self.teacher
            return self._forward(images)

    def validate(self, *, flip: bool) -> dict[str, float]:
        """The served net (the average, where kept) on the held-out batches."""
        kw = dict(dtype=self.dtype, memory_format=self.memory_format, flip=flip)
        return evaluate(self.served, self.data.val_batches, self.device, **kw)

    def record(self, epoch_mark: float, lr: float, *, publish: bool = True) -> dict:
        """Evaluate, add one metrics record covering the steps since the last one to the history (and, unless
        `publish` is False, to metrics.jsonl), start a new window."""
        window, progress = self.window, self.progress
        seconds = time.perf_counter() - window.started
        window.check_finite(progress.step, math.ceil(epoch_mark) - 1, self.folder.checkpoint_path)
        seen = max(window.seen, 1)
        record = {
            "epoch": epoch_mark,
            "step": progress.step,
            "lr": lr,
            "train_loss": window.loss_sum.item() / seen,
            "train_top1": window.correct.item() / seen,
        }
        if self.teacher is not None:  # train_loss is then the distillation objective
            record["train_cross_entropy"] = window.cross_entropy_sum.item() / seen
        if self.data.val_batches is not None:
            metrics = self.validate(flip=self.recipe.eval_flip)
            record.update(val_loss=metrics["loss"], val_top1=metrics["top1"], val_top5=metrics["top5"])
            if self.recipe.eval_flip and progress.step >= self.total_steps:  # the papers' figure: one view
                one_view = self.validate(flip=False)
                record.update(val_top1_one_view=one_view["top1"], val_top5_one_view=one_view["top5"])
        # timed_steps: the steps these seconds cover, fewer than the epoch's own when the run resumed inside it (and
        # without the process's first step)
        images_per_second = window.timed_images * self.ranks.world_size / seconds
        record.update(epoch_seconds=seconds, timed_steps=window.steps, img_per_s=images_per_second)
        progress.history.append(record)
        if publish:
            self.publish(record)
        window.reset()
        return record

    def publish(self, record: dict) -> None:
        """A metrics record to metrics.jsonl, TensorBoard and the log."""
        if not self.ranks.is_main:
            return
        self.folder.append_metrics(record)
        if self.writer is not None:
            for key, value in record.items():
                self.writer.add_scalar(key, value, record["step"])
        validated = (
            f"val loss {record['val_loss']:.4f} top1 {record['val_top1']:.4f} top5 {record['val_top5']:.4f}"
            if "val_top1" in record
            else "no validation"
        )
        print(
            f"epoch {record['epoch']:g}/{self.total_epochs} step {record['step']}  train loss "
            f"{record['train_loss']:.4f} acc {record['train_top1']:.4f}  {validated}  "
            f"{record['epoch_seconds']:.0f}s {record['img_per_s']:.0f} img/s"
        )

    def checkpoint(self, epoch: int, position: int) -> None:
        if self.ranks.is_main:
            state = self.progress.as_state(epoch, position)
            card = self.card.to_strings()
            save_checkpoint(
                self.folder.checkpoint_path, self.model, self.optimizer, self.scaler, state, self.ema, weights_card=card
            )

    def run_epoch(self, epoch: int, stop: StopRequest, stop_after_steps: int | None, show: bool) -> TrainResult | None:
        """The steps of `epoch` from where the run stands; a stop request checkpoints and returns why."""
        progress, recipe = self.progress, self.recipe
        self.wrapped.train()
        lr = self.lr_at(progress.step)  # also when a resumed epoch has no steps left
        bar = tqdm(
            total=min(self.steps_per_epoch, self.total_steps - epoch * self.steps_per_epoch),
            initial=progress.position,
            desc=f"epoch {epoch + 1}/{self.total_epochs}",
            disable=not show,
            leave=False,
        )
        batches = self.data.train_batches.epoch(epoch, start=progress.position)
        for position, (images, labels) in enumerate(batches, start=progress.position):
            if progress.step >= self.total_steps:
                break
            lr = self.lr_at(progress.step)
            loss = self.step(images, labels, lr)
            if progress.step % self.window.sync_every == 0:
                rate = self.window.timed_images / (time.perf_counter() - self.window.started)
                bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
            bar.update()
            if self.ranks.is_main and not show and recipe.log_every and (position + 1) % recipe.log_every == 0:
                print(
                    f"epoch {epoch + 1} batch {position + 1}/{self.steps_per_epoch} loss {loss.item():.4f} lr {lr:.4g}"
                )
            last_of_epoch = position + 1 == self.steps_per_epoch or progress.step == self.total_steps
            if recipe.eval_every and progress.step % recipe.eval_every == 0 and not last_of_epoch:
                self.record(round(progress.step / self.steps_per_epoch, 3), lr)
                self.wrapped.train()
            if stop.signal is not None or progress.step == stop_after_steps:
                bar.close()
                return self.stop(epoch, position + 1, stop.signal, stop_after_steps)
        bar.close()
        record = self.record(epoch + 1, lr, publish=False)
        progress.position = 0
        self.checkpoint(epoch + 1, 0)
        self.publish(record)  # after the checkpoint that holds it: a failed write leaves metrics.jsonl behind it too
        return None

    def stop(self, epoch: int, position: int, signal_number: int | None, stop_after_steps: int | None) -> TrainResult:
        """Checkpoint mid-epoch and say how to go on."""
        self.window.check_finite(self.progress.step, epoch, self.folder.checkpoint_path)
        self.checkpoint(epoch, position)
        reason = f"signal {signal_number}" if signal_number else f"stop_after_steps={stop_after_steps}"
        if self.ranks.is_main:
            print(f"stopped at step {self.progress.step} ({reason}); continue with --resume")
        last = self.progress.history[-1] if self.progress.history else {}
        return TrainResult(step=self.progress.step, metrics=last, stopped=True, signal=signal_number or None)

    def save(self) -> TrainResult:
        """The final weights (the average, where kept) with their classes and preprocessing; the last metrics."""
        final = self.progress.history[-1] if self.progress.history else {}
        if self.ranks.is_main:
            # how it was made, so that a shipped file says it by itself
            made = {
                "recipe": self.recipe.name,
                "recipe_fields": json.dumps(self.recipe.to_dict()),
                "epochs": f"{self.progress.step / self.steps_per_epoch:g}",
                "steps": str(self.progress.step),
                "eval_flip": str(self.recipe.eval_flip).lower(),
                "trained_on": json.dumps(self.trained_on),
                "command": self.command,
                # val_top1_one_view: with eval_flip, the figure without the flip; none of them without a hold-out
                **{key: str(final[key]) for key in ("val_top1", "val_top5", "val_top1_one_view") if key in final},
            }
            card = dataclasses.replace(self.card, extra=made)
            save_safetensors(self.served.state_dict(), self.folder.model_path, card.to_strings())
        return TrainResult(step=self.progress.step, metrics=final)


def train(
    model_name: str,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    recipe: Recipe,
    *,
    model_overrides: dict[str, Any] | None = None,
    resume: bool = False,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    skip_bad_images: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train `model_name` on an image folder, archive or CIFAR pickles; write the run to `out_dir`.

    The run directory holds `config.json`, `metrics.jsonl`, `checkpoint.pt` (each epoch and on SIGINT/SIGTERM)
    and `model.safetensors` (final weights with their classes and preprocessing). `resume=True` continues
    exactly where the checkpoint stopped, after checking that model, classes, data and recipe are the ones the run
    recorded; a new run refuses a folder that holds anything unless `overwrite`. Returns a `TrainResult`: the last
    epoch's metrics, and whether a signal or `stop_after_steps` stopped the run (and at which step).
    """
    folder = RunFolder(out_dir)
    entry = get_entry(model_name)  # an unknown name fails before any data is read
    _check_stop_after(stop_after_steps, step=0)
    # What the folder holds is checked before any data is read, and changed only once every check has passed.
    if resume:
        folder.require_checkpoint()
    if not resume and not overwrite:
        folder.prepare_new(overwrite=False)  # refuses a folder that holds anything
    torch_device = resolve_device(device)
    dtype = resolve_precision(recipe.precision, torch_device)
    ranks = Distributed.setup(torch_device)
    cuda_graphs_pay(recipe.cuda_graphs, torch_device, ranks.world_size)  # an impossible ask fails before data is read
    # One process trains a folder at a time (rank 0 speaks for a torchrun job).
    with folder.training() if ranks.is_main else contextlib.nullcontext():
        torch.manual_seed(recipe.seed)
        run_data = prepare_data(
            data,
            recipe,
            entry=entry,
            ranks=ranks,
            device=torch_device,
            cache_dir=cache_dir,
            skip_bad_images=skip_bad_images,
        )
        run_info = _run_info(model_name, model_overrides or {}, recipe, data, run_data, torch_device, dtype, ranks)
        if resume:
            changed = folder.check_resume(run_info)  # before anything is loaded or written
            if changed and ranks.is_main:
                print(f"resuming with changed recipe values: {'; '.join(changed)}")
        trainer = Trainer(
            model_name,
            recipe,
            run_data,
            model_overrides=model_overrides or {},
            device=torch_device,
            dtype=dtype,
            ranks=ranks,
            folder=folder,
        )
        _take_over_folder(trainer, resume=resume, overwrite=overwrite, stop_after_steps=stop_after_steps)
        failed = True
        try:
            _write_config(trainer, run_info, resume)
            trainer.writer = _tensorboard(folder.path) if ranks.is_main and recipe.tensorboard else None
            stopped = _run_epochs(trainer, stop_after_steps, show=progress and ranks.is_main)
            result = stopped if stopped is not None else trainer.save()
            failed = False
            return result
        finally:
            if trainer.writer is not None:
                trainer.writer.close()
            if ranks.is_main:
                folder.settle(failed)


def _take_over_folder(trainer: Trainer, *, resume: bool, overwrite: bool, stop_after_steps: int | None) -> None:
    """The last checks, then the first write: a resumed run's checkpoint loaded (its teacher and stop step checked),
    or a new run's folder cleared (--overwrite sets the old run aside only now that the new one is built)."""
    folder = trainer.folder
    if resume:
        if trainer.teacher is not None:
            folder.check_teacher(trainer.teacher.sha256)
        trainer.resume()
        _check_stop_after(stop_after_steps, trainer.progress.step)  # before the folder is written to
    elif trainer.ranks.is_main:
        folder.prepare_new(overwrite)
    if trainer.ranks.is_main:
        folder.begin(resume)


def _check_stop_after(stop_after_steps: int | None, step: int) -> None:
    """`stop_after_steps` must lie ahead of the step the run starts from (0 for a new run): a resumed run past it
    would otherwise never meet it and train to the end."""
    if stop_after_steps is not None and stop_after_steps <= step:
        where = f"the run is at step {step:,} already; give a later step" if step else "must be >= 1"
        raise ValueError(f"--stop-after-steps {stop_after_steps}: {where}")


def _run_epochs(trainer: Trainer, stop_after_steps: int | None, show: bool) -> TrainResult | None:
    """The epochs left; how they stopped when a signal or `stop_after_steps` stopped them, else None."""
    # An eager CPU step reuses the last step's freed memory instead of faulting fresh pages in.
    with StopRequest() as stop, steady_host_memory(trainer.device):
        for epoch in range(trainer.progress.epoch, trainer.total_epochs):
            trainer.progress.epoch = epoch
            stopped = trainer.run_epoch(epoch, stop, stop_after_steps, show=show)
            if stopped is not None:
                return stopped
    return None


def train_command(
    model_name: str, model_overrides: dict[str, Any], recipe: Recipe, data: str | os.PathLike, out: str | os.PathLike
) -> str:
    """The `resnets train` command line that makes this run, whichever way it was started (the CLI, `reproduce`,
    the Python API): config.json and the weights file keep it.

    Example:
        >>> train_command("resnet20", {}, get_recipe("cifar-fast", epochs=180), "cifar10", "runs/r20")
        'resnets train --model resnet20 --data cifar10 --recipe cifar-fast --epochs 180 --out runs/r20'
    """
    words = ["resnets", "train", "--model", model_name, "--data", str(data), *recipe.flags()]
    if model_overrides:
        words += ["--set", *(f"{key}={json.dumps(value)}" for key, value in model_overrides.items())]
    return shlex.join([*words, "--out", str(out)])


def _run_info(model_name, model_overrides, recipe, data, run_data: RunData, device, dtype, ranks) -> dict[str, Any]:
    """What config.json records of a run before it starts (the model's size and the hardware follow)."""
    return {
        "model": model_name,
        "model_overrides": model_overrides,
        "recipe": recipe.to_dict(),
        "data": str(data),
        "classes": run_data.train_set.classes,
        "mean": list(run_data.mean),
        "std": list(run_data.std),
        "image_size": run_data.image_size,
        "device": describe_device(device),
        "precision": str(dtype).replace("torch.", ""),
        "world_size": ranks.world_size,
        "train_images": len(run_data.train_set),
        "val_images": len(run_data.val_set),
        "skipped_images": run_data.skipped,
    }


def _write_config(trainer: Trainer, run_info: dict[str, Any], resume: bool) -> None:
    """config.json with the model's size and the run's hardware stretches (a resumed run may continue on other
    hardware: each stretch keeps its device, precision and first step); the start of the log."""
    folder, recipe = trainer.folder, trainer.recipe
    run_info["parameters"] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    run_info["layers"] = trainer.model.config.depth
    run_info["compiled"] = trainer.compiled
    run_info["cuda_graphs"] = trainer.graphed
    run_info["command"] = train_command(
        run_info["model"], run_info["model_overrides"], recipe, run_info["data"], folder.path
    )
    if trainer.teacher is not None:
        run_info["teacher"] = trainer.teacher.description
        run_info["teacher_sha256"] = trainer.teacher.sha256
        run_info["teacher_served_by"] = trainer.teacher_served_by
    run_info["trained_on"] = _stretches(folder.config_path if resume else None, run_info, trainer.progress.step)
    trainer.trained_on, trainer.command = run_info["trained_on"], run_info["command"]
    if not trainer.ranks.is_main:
        return
    folder.write_config(run_info)
    data = trainer.data
    print(
        f"training {run_info['model']} on {len(data.train_set)} images ({len(data.val_set)} held out) | "
        f"{run_info['device']}"
    )
    if trainer.teacher is not None:
        print(f"distilling from {trainer.teacher.description}, served in {trainer.teacher_served_by}")
    if data.skipped:
        print(f"skipped {data.skipped} unreadable image{'s' if data.skipped != 1 else ''} (--skip-bad-images)")
    graphs = ", CUDA graphs" if trainer.graphed else ""
    print(
        f"precision {run_info['precision']}, channels_last {recipe.channels_last}, compiled {trainer.compiled}"
        f"{graphs} | {recipe.describe()}"
    )


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn(
            "--tensorboard needs the tensorboard package (pip install tensorboard); not writing events", stacklevel=2
        )
        return None
    return SummaryWriter(str(out / "tensorboard"))
