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
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from resnets.data import IMAGENET_MEAN, IMAGENET_STD, channel_stats, load_dataset, make_batches, stratified_split
from resnets.errors import ResnetsError
from resnets.hardware import describe_device, resolve_device, resolve_precision
from resnets.models import create_model, get_entry
from resnets.train.checkpoint import load_checkpoint, save_checkpoint
from resnets.train.evaluate import evaluate
from resnets.train.recipes import Augment, Recipe
from resnets.train.run_folder import RunFolder, RunFolderError
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


def _param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    if recipe.decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def hardware_history(config: dict) -> list[dict]:
    """The stretches of device and precision a run trained with, read from its config.json; a config written before
    `trained_on` existed counts as one stretch from step 0.

    Example:
        >>> hardware_history(json.loads(Path("runs/r20/config.json").read_text()))[0]["device"]
    """
    return config.get("trained_on") or [{"device": config["device"], "precision": config["precision"], "from_step": 0}]


def _stretches(previous_config: Path | None, run_info: dict, step: int) -> list[dict]:
    """The run's hardware history: the earlier config's stretches, plus this one if the hardware changed."""
    earlier: list[dict] = []
    if previous_config is not None and previous_config.exists():
        earlier = hardware_history(json.loads(previous_config.read_text()))
    current = {"device": run_info["device"], "precision": run_info["precision"], "from_step": step}
    if earlier and (earlier[-1]["device"], earlier[-1]["precision"]) == (current["device"], current["precision"]):
        return earlier
    return [*earlier, current]


def train(
    model_name: str,
    data: str | os.PathLike,
    out_dir: str | os.PathLike,
    recipe: Recipe,
    model_overrides: dict[str, Any] | None = None,
    resume: bool = False,
    device: str = "auto",
    cache_dir: str | os.PathLike | None = None,
    skip_bad_images: bool = False,
    stop_after_steps: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train `model_name` on an image folder, archive or CIFAR pickles; write the run to `out_dir`.

    The run directory holds `config.json`, `metrics.jsonl`, `checkpoint.pt` (each epoch and on SIGINT/SIGTERM)
    and `model.safetensors` (final weights with their classes and preprocessing). `resume=True` continues
    exactly where the checkpoint stopped, after checking that model, classes, data and recipe are the ones the run
    recorded; a new run refuses a folder that holds anything unless `overwrite`. Returns the last epoch's metrics.
    """
    # ---- set-up, once -------------------------------------------------------------------------------
    folder = RunFolder(out_dir)
    out = folder.path
    entry = get_entry(model_name)  # an unknown name fails before any data is read
    if stop_after_steps is not None and stop_after_steps < 1:
        raise ValueError(f"--stop-after-steps {stop_after_steps}: must be >= 1")
    # What the folder holds is checked before any data is read, and changed only once every check has passed.
    if resume and not folder.checkpoint_path.is_file():
        raise RunFolderError(f"--resume: {out} holds no {folder.checkpoint_path.name} to continue from")
    if not resume and not overwrite:
        folder.prepare_new(overwrite=False)  # refuses a folder that holds anything
    torch_device = resolve_device(device)
    dtype = resolve_precision(recipe.precision, torch_device)
    ranks = Distributed.setup(torch_device)
    torch.manual_seed(recipe.seed)

    train_set, val_set = load_dataset(data, cache_dir=cache_dir, skip_bad_images=skip_bad_images)
    skipped = train_set.skipped + (val_set.skipped if val_set is not None else 0)
    if val_set is None:
        if recipe.val_fraction * len(train_set) / len(train_set.classes) < 1:
            raise ValueError(
                f"--val-fraction {recipe.val_fraction}: holds out no image of some class from {len(train_set)} "
                "images; a run needs validation images (raise it, or give the data a val/ folder)"
            )
        train_set, val_set = stratified_split(train_set, recipe.val_fraction, seed=recipe.seed)
    small = train_set.images is not None
    mean, std = channel_stats(train_set.images) if small else (IMAGENET_MEAN, IMAGENET_STD)
    image_size = recipe.image_size or (train_set.images.shape[-1] if small else entry.input_size[-1])
    augment = recipe.augment if recipe.augment != Augment.AUTO else (Augment.CIFAR if small else Augment.IMAGENET)
    batches_kw = dict(rank=ranks.rank, world_size=ranks.world_size)
    if recipe.batch_size % ranks.world_size:
        raise ValueError(f"batch_size {recipe.batch_size} does not split evenly over {ranks.world_size} processes")
    train_batches = make_batches(
        train_set, recipe.batch_size, mean, std, augment != Augment.NONE, image_size, recipe.seed, **batches_kw
    )
    val_batches = make_batches(val_set, 256, mean, std, False, image_size, recipe.seed)

    run_info = {
        "model": model_name,
        "model_overrides": model_overrides or {},
        "recipe": recipe.to_dict(),
        "data": str(data),
        "classes": train_set.classes,
        "mean": list(mean),
        "std": list(std),
        "image_size": image_size,
        "device": describe_device(torch_device),
        "precision": str(dtype).replace("torch.", ""),
        "world_size": ranks.world_size,
        "train_images": len(train_set),
        "val_images": len(val_set),
        "skipped_images": skipped,
    }
    if resume:
        changed = folder.check_resume(run_info)  # before anything is loaded or written
        if changed and ranks.is_main:
            print(f"resuming with changed recipe values: {'; '.join(changed)}")
    elif ranks.is_main:
        folder.prepare_new(overwrite)

    model = create_model(model_name, num_classes=len(train_set.classes), **(model_overrides or {}))
    memory_format = torch.channels_last if recipe.channels_last else torch.contiguous_format
    model.to(torch_device, memory_format=memory_format)
    optimizer = torch.optim.SGD(
        _param_groups(model, recipe),
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )
    # The average (BN statistics included) is what gets evaluated and saved: it smooths the last epochs' noise.
    ema = weights_average(model, recipe.ema_decay) if recipe.ema_decay else None
    served = ema.module if ema is not None else model
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    scaler = torch.amp.GradScaler(torch_device.type, enabled=dtype == torch.float16)
    steps_per_epoch = len(train_batches)
    total_steps = recipe.steps(steps_per_epoch)
    total_epochs = math.ceil(total_steps / steps_per_epoch)

    state = {"epoch": 0, "position": 0, "step": 0, "history": []}
    checkpoint_path = folder.checkpoint_path
    if resume:
        state = load_checkpoint(checkpoint_path, model, optimizer, scaler, ema)
    wrapped = nn.parallel.DistributedDataParallel(model) if ranks.world_size > 1 else model
    step_fn = torch.compile(wrapped) if recipe.compile else wrapped

    # What the run folder says of itself, so that readers (reports, tables) need not rebuild the model.
    run_info["parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    run_info["layers"] = model.config.depth
    # A resumed run may continue on other hardware: each stretch keeps its device, precision and first step.
    config_path = folder.config_path
    run_info["trained_on"] = _stretches(config_path if resume else None, run_info, state["step"])
    if ranks.is_main:
        folder.write_config(run_info)
        print(f"training {model_name} on {len(train_set)} images ({len(val_set)} held out) | {run_info['device']}")
        if skipped:
            print(f"skipped {skipped} unreadable image{'s' if skipped != 1 else ''} (--skip-bad-images)")
        print(f"precision {run_info['precision']}, channels_last {recipe.channels_last} | {recipe.describe()}")
    writer = _tensorboard(out) if ranks.is_main and recipe.tensorboard else None

    def checkpoint(epoch: int, position: int) -> None:
        if ranks.is_main:
            save_checkpoint(checkpoint_path, model, optimizer, scaler, dict(state, epoch=epoch, position=position), ema)

    autocast = torch.autocast(torch_device.type, dtype=dtype, enabled=dtype != torch.float32)
    depth = model.config.depth
    if resume and ranks.is_main:
        folder.rewrite_metrics(state["history"])  # records after the checkpoint belong to steps about to rerun
    # Reading a value off a GPU waits for every queued kernel, so there the window's sums stay on the device and
    # are read (and the loss checked for inf/nan) every `sync_every` steps, not after each one.
    sync_every = 1 if torch_device.type == "cpu" else 25
    window = {
        "started": time.perf_counter(),
        "seen": 0,
        "loss_sum": torch.zeros((), device=torch_device),
        "correct": torch.zeros((), dtype=torch.long, device=torch_device),
    }

    def check_finite(epoch: int) -> None:
        """Stop before a diverged model is evaluated or checkpointed: the checkpoint on disk stays the last good one."""
        if not torch.isfinite(window["loss_sum"]):
            raise TrainingError(
                f"loss became {window['loss_sum'].item()} by step {state['step']} (epoch {epoch + 1}); stopped, "
                f"the last good checkpoint is kept at {checkpoint_path}"
            )

    def record_metrics(epoch_mark: float, lr: float) -> None:
        """Evaluate, append one metrics record covering the steps since the last one, start a new window."""
        seconds = time.perf_counter() - window["started"]
        check_finite(math.ceil(epoch_mark) - 1)
        seen = max(window["seen"], 1)
        metrics = evaluate(served, val_batches, torch_device, dtype, memory_format, flip=recipe.eval_flip)
        record = {
            "epoch": epoch_mark,
            "step": state["step"],
            "lr": lr,
            "train_loss": window["loss_sum"].item() / seen,
            "train_top1": window["correct"].item() / seen,
            "val_loss": metrics["loss"],
            "val_top1": metrics["top1"],
            "val_top5": metrics["top5"],
            "epoch_seconds": seconds,
            "img_per_s": window["seen"] * ranks.world_size / seconds,
        }
        state["history"].append(record)
        if ranks.is_main:
            folder.append_metrics(record)
            if writer is not None:
                for key, value in record.items():
                    writer.add_scalar(key, value, record["step"])
            print(
                f"epoch {epoch_mark:g}/{total_epochs} step {state['step']}  train loss {record['train_loss']:.4f} "
                f"acc {record['train_top1']:.4f}  val loss {record['val_loss']:.4f} "
                f"top1 {record['val_top1']:.4f} top5 {record['val_top5']:.4f}  "
                f"{seconds:.0f}s {record['img_per_s']:.0f} img/s"
            )
        window.update(started=time.perf_counter(), seen=0)
        window["loss_sum"].zero_()
        window["correct"].zero_()

    # ---- the loop -------------------------------------------------------------------------------------
    with StopRequest() as stop:
        for epoch in range(state["epoch"], total_epochs):
            wrapped.train()
            lr = recipe.lr_at(state["step"], steps_per_epoch, depth)  # also when a resumed epoch has no steps left
            bar = tqdm(
                total=min(steps_per_epoch, total_steps - epoch * steps_per_epoch),
                initial=state["position"],
                desc=f"epoch {epoch + 1}/{total_epochs}",
                disable=not (progress and ranks.is_main),
                leave=False,
            )
            for position, (images, labels) in enumerate(
                train_batches.epoch(epoch, start=state["position"]), start=state["position"]
            ):
                if state["step"] >= total_steps:
                    break
                lr = recipe.lr_at(state["step"], steps_per_epoch, depth)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if torch_device.type == "cuda":  # a copy from pageable memory would wait for the GPU to go idle
                    images, labels = images.pin_memory(), labels.pin_memory()
                images = images.to(torch_device, memory_format=memory_format, non_blocking=True)
                labels = labels.to(torch_device, non_blocking=True)
                with autocast:
                    logits = step_fn(images)
                loss = criterion(logits.float(), labels)
                window["loss_sum"] += loss.detach() * len(labels)
                window["correct"] += (logits.argmax(1) == labels).sum()
                synced = (state["step"] + 1) % sync_every == 0
                if synced:
                    check_finite(epoch)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                if ema is not None:
                    ema.update_parameters(model)
                state["step"] += 1
                window["seen"] += len(labels)
                if synced:
                    rate = window["seen"] / (time.perf_counter() - window["started"])
                    bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", img_s=f"{rate:.0f}")
                bar.update()
                if ranks.is_main and not progress and recipe.log_every and (position + 1) % recipe.log_every == 0:
                    print(
                        f"epoch {epoch + 1} batch {position + 1}/{steps_per_epoch} loss {loss.item():.4f} lr {lr:.4g}"
                    )
                last_of_epoch = position + 1 == steps_per_epoch or state["step"] == total_steps
                if recipe.eval_every and state["step"] % recipe.eval_every == 0 and not last_of_epoch:
                    record_metrics(round(state["step"] / steps_per_epoch, 3), lr)
                    wrapped.train()
                stop_now = stop.signal is not None or state["step"] == stop_after_steps
                if stop_now:
                    check_finite(epoch)
                    checkpoint(epoch, position + 1)
                    bar.close()
                    reason = f"signal {stop.signal}" if stop.signal else f"stop_after_steps={stop_after_steps}"
                    if ranks.is_main:
                        print(f"stopped at step {state['step']} ({reason}); continue with --resume")
                    return {"stopped": True, "step": state["step"], **({"signal": stop.signal} if stop.signal else {})}
            bar.close()
            record_metrics(epoch + 1, lr)
            state["position"] = 0
            checkpoint(epoch + 1, 0)
    # ---- the result -----------------------------------------------------------------------------------
    final = state["history"][-1] if state["history"] else {}
    if ranks.is_main:
        card = WeightsMetadata(
            model=model_name,
            model_overrides=model_overrides or {},
            classes=train_set.classes,
            image_size=image_size,
            mean=tuple(mean),
            std=tuple(std),
            extra={"recipe": recipe.name, "val_top1": str(final.get("val_top1", ""))},
        )
        save_safetensors(served.state_dict(), folder.model_path, card.to_strings())
    if writer is not None:
        writer.close()
    return final


def _tensorboard(out: Path):
    with contextlib.suppress(ImportError):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(out / "tensorboard"))
    return None
