"""Training throughput of `resnets train`'s engine against a plain PyTorch loop, in one process.

The baseline is seed 001's loop written correctly: fp32, NCHW, a torchvision DataLoader with per-image transforms
(pad-4 random crop and flip for CIFAR; random-resized crop and flip at 224), SGD with momentum, cross-entropy.
Our engine runs as a real run does (batch augmentation on a uint8 tensor for small images, channels_last, bf16
where the CPU has it natively, fused SGD, and the model compiled as it is by default for runs of 2,000+ steps: these
short runs ask for it, and its compile time falls in the warm-up, as it would in a long run). The timed steps
fall inside one epoch, in whole batches, as nearly all of a real run's do. The two alternate, a few rounds each,
so that a noisy machine hurts both alike; the img/s are each loop's median, the ratio is the median of the rounds'
ratios (each round's two timings a minute or two apart, so that a shared machine's slow drift in speed falls on
both), and the rounds' lowest and highest ratios follow it.

Usage: python benchmarks/train_throughput.py [--rounds 3] [--steps 30] [--skip-resnet50] [--eager] [--device cuda]
       [--distill]

--distill adds a line for a distilled step (resnet20 taught by the shipped resnet56): our engine with the teacher
served as int8 inference models against the same engine running the teacher as it runs the student (compiled, bf16
where native). Both are `resnets train`; the plain loop has no teacher to compare with.

On a GPU (`--device cuda`) the plain loop moves each batch from the DataLoader to the device (pinned, non-blocking)
and runs fp32; ours keeps the uint8 training set on the GPU and augments it there, in bf16, and replays each step's
forward and backward as CUDA graphs (its default there, in place of compiling).

As an AVX2-only CPU (AMD Zen3) on a newer one: `ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python ...` keeps
torch's kernels to AVX2 and, through `resnets.hardware`, our choices too (fp32: bf16 is emulated there); the device
line says "capped by". A simulation of the instruction sets, not of the other CPU's caches and clocks.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import datasets
from torchvision.transforms import v2

from resnets.data import load_dataset
from resnets.hardware import describe_device, resolve_device
from resnets.models import create_model
from resnets.train import get_recipe, train
from resnets.train.plots import read_metrics

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "cifar10-sample.tar.gz"


class PilImages(Dataset):
    """Decoded CIFAR images as PIL, transformed one by one (what torchvision.datasets.CIFAR10 does)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images, self.labels, self.transform = images.permute(0, 2, 3, 1).numpy(), labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


WARMUP = 4  # untimed steps before the timed ones, for both loops (even: the engine records every two steps)


def plain_loop(model_name: str, loader: DataLoader, steps: int, device: torch.device) -> float:
    """img/s of the textbook loop over `steps` batches (after WARMUP batches)."""
    model = create_model(model_name, num_classes=10).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss()
    seen, started = 0, None
    if len(loader) < WARMUP + steps:
        raise ValueError(f"{len(loader)} batches: fewer than the {WARMUP + steps} steps to run in one epoch")
    for step, (images, labels) in enumerate(loader):
        if step == WARMUP:
            _synchronize(device)
            seen, started = 0, time.perf_counter()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        seen += len(labels)
        if step == WARMUP + steps - 1:
            break
    _synchronize(device)
    return seen / (time.perf_counter() - started)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def engine(
    model_name: str, data: Path, steps: int, workdir: Path, compiled: bool, device: torch.device, **recipe_fields
) -> float:
    """img/s of `resnets train` over `steps` steps after WARMUP more: the run records its throughput every two
    steps (evaluation time excluded) and the warm-up's records are dropped."""
    out = Path(tempfile.mkdtemp(dir=workdir))
    # On a GPU a real run replays CUDA graphs instead of compiling (the defaults); --eager turns both off.
    speedup = dict(compile=compiled) if device.type != "cuda" else dict(compile=None if compiled else False)
    if device.type == "cuda" and not compiled:
        speedup["cuda_graphs"] = False
    fields = dict(iterations=WARMUP + steps, eval_every=2, eval_flip=False, log_every=0, **speedup, **recipe_fields)
    recipe = get_recipe("cifar-fast", **fields)
    train(model_name, data, out, recipe, device=str(device), cache_dir=workdir / "cache", progress=False)
    records = read_metrics(out)[WARMUP // 2 :]
    seen = sum(r["img_per_s"] * r["epoch_seconds"] for r in records)
    return seen / sum(r["epoch_seconds"] for r in records)


def make_cifar_pickles(root: Path, copies: int = 4) -> Path:
    """The sample's images `copies` times over in CIFAR's pickle layout: enough for the timed steps to fall inside
    one epoch, as nearly all of a real run's do (an epoch's end writes a checkpoint)."""
    import pickle

    train_set, _ = load_dataset(SAMPLE)
    data = train_set.images.reshape(len(train_set.labels), -1).numpy()
    root.mkdir(parents=True, exist_ok=True)
    images, labels = np.concatenate([data] * copies), np.array(train_set.labels.tolist() * copies)
    parts = zip(range(1, 6), np.array_split(images, 5), np.array_split(labels, 5), strict=True)
    # CIFAR-10's layout in full: five training batches, a test batch, the class names
    batches = {f"data_batch_{number}": {"data": part, "labels": names.tolist()} for number, part, names in parts}
    batches["test_batch"] = {"data": data[:100], "labels": train_set.labels[:100].tolist()}
    batches["batches.meta"] = {"label_names": train_set.classes}
    for name, content in batches.items():
        (root / name).write_bytes(pickle.dumps(content))
    return root


def make_large_folder(root: Path, per_class: int = 48, size: int = 256) -> Path:
    rng = np.random.default_rng(0)
    for index in range(4):
        (root / f"class{index}").mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            array = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / f"class{index}" / f"{i}.jpg", quality=90)
    return root


def compare(
    name: str, run_plain, run_ours, rounds: int, labels: tuple[str, str] = ("plain loop", "resnets train")
) -> None:
    plain, ours = [], []
    for _ in range(rounds):
        plain.append(run_plain())
        ours.append(run_ours())
    ratios = [o / p for p, o in zip(plain, ours, strict=True)]
    print(
        f"{name:<28} {labels[0]} {statistics.median(plain):7.1f} img/s   {labels[1]} {statistics.median(ours):7.1f} "
        f"img/s   ratio {statistics.median(ratios):4.2f}x (rounds {min(ratios):.2f} to {max(ratios):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip-resnet50", action="store_true")
    parser.add_argument("--eager", action="store_true", help="ours without compiling or CUDA graphs")
    parser.add_argument("--device", default="cpu", help="cpu | cuda (both loops run there)")
    parser.add_argument("--distill", action="store_true", help="also time a distilled step: int8 teacher vs not")
    args = parser.parse_args()
    # Each round writes checkpoints (about 1 GB in all with resnet50): the folder goes when the benchmark ends.
    with tempfile.TemporaryDirectory() as workdir:
        run(args, Path(workdir))


def run(args: argparse.Namespace, workdir: Path) -> None:
    device = resolve_device(args.device)
    print(f"device: {describe_device(device)}; torch {torch.__version__}")
    sample, _ = load_dataset(SAMPLE)
    cifar = make_cifar_pickles(workdir / "cifar", copies=max(4, -(-(args.steps + WARMUP) * 128 // len(sample))))
    train_set, _ = load_dataset(cifar)  # the same images for both loops, enough for every step in one epoch
    cifar_transform = v2.Compose(
        [
            v2.RandomCrop(32, padding=4),
            v2.RandomHorizontalFlip(),
            v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.49, 0.48, 0.45], [0.25, 0.24, 0.26]),
        ]
    )
    cifar_loader = DataLoader(
        PilImages(train_set.images, train_set.labels, cifar_transform),
        batch_size=128,
        shuffle=True,
        num_workers=2,
        persistent_workers=True,
        pin_memory=device.type == "cuda",
    )
    compare(
        "resnet20, 32x32, batch 128",
        lambda: plain_loop("resnet20", cifar_loader, args.steps, device),
        lambda: engine("resnet20", cifar, args.steps, workdir, not args.eager, device),
        args.rounds,
    )
    if args.distill:
        compare(
            "resnet20 taught by resnet56",
            lambda: engine(
                "resnet20", cifar, args.steps, workdir, True, device, teacher="resnet56", teacher_int8=False
            ),
            lambda: engine("resnet20", cifar, args.steps, workdir, True, device, teacher="resnet56", teacher_int8=True),
            args.rounds,
            labels=("teacher as the student", "teacher int8"),
        )
    if not args.skip_resnet50:
        steps = max(8, args.steps // 3)
        # Enough images for every step to fall in the first epoch (10% held out): 4 classes, 16 a batch.
        folder = make_large_folder(workdir / "large", per_class=5 * (steps + WARMUP))
        imagenet_transform = v2.Compose(
            [
                v2.RandomResizedCrop(224, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.PILToTensor(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ]
        )
        large_loader = DataLoader(
            datasets.ImageFolder(str(folder), imagenet_transform),
            batch_size=16,
            shuffle=True,
            num_workers=2,
            pin_memory=device.type == "cuda",
        )
        compare(
            "resnet50, 224x224, batch 16",
            lambda: plain_loop("resnet50", large_loader, steps, device),
            lambda: engine(
                "resnet50",
                folder,
                steps,
                workdir,
                not args.eager,
                device,
                batch_size=16,
                val_fraction=0.1,
                augment="imagenet",
            ),
            args.rounds,
        )


if __name__ == "__main__":
    main()
