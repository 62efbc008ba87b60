"""Batches for training and evaluation.

Decoded images are augmented a whole batch at a time on uint8 tensors (the paper's 4-pixel pad, random
crop and flip), with randomness drawn from (seed, epoch, step): the same run gives the same batches, a
resumed run continues with exactly the batches it would have seen, and DDP ranks take slices of one
global batch. On a GPU the uint8 images live on the device and are augmented there; the random draws are
still made on the CPU from the same generators, so the batches are the CPU's and a run resumes exactly on
either. Large images go through DataLoader workers with torchvision transforms.

Example:
    >>> batches = TensorBatches(train, batch_size=128, mean=mean, std=std, augment=True, seed=0)
    >>> for images, labels in batches.epoch(0): ...
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from resnets.data.sources import DataError, ImageSet, decode_image, load_dataset
from resnets.errors import SKIP_HINT

# torchvision's ImageNet normalization: the default for large images and for weights that carry none.
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def channel_stats(images: torch.Tensor, sample: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (0..1 scale) of uint8 images, from up to `sample` of them."""
    step = max(1, len(images) // sample)
    pixels = images[::step].float().div_(255).permute(1, 0, 2, 3).flatten(1)
    return tuple(pixels.mean(1).tolist()), tuple(pixels.std(1).tolist())


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, 3, H, W) -> normalized float32, on the images' device."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean_t) / std_t


def pad_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """The paper's CIFAR augmentation on a whole uint8 batch: zero-pad, random crop, random horizontal flip. The
    draws come from the (CPU) `generator`; the gather runs on the images' device."""
    n, _, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(device)
    # Every crop is a window of the padded image: one index per image into the windows' view, not one per pixel.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (n, channels, 2p + 1, 2p + 1, h, w), no copy
    crops = windows[torch.arange(n, device=device), :, dy, dx]
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Cutout (DeVries & Taylor, 2017) on a normalized batch: a `size` x `size` square at a random centre of each
    image set to 0, the mean colour; near an edge the square runs off the image, as in the paper."""
    return images.masked_fill(cutout_mask(images.shape, size, generator, images.device)[:, None], 0.0)


def cutout_mask(
    shape: Sequence[int], size: int, generator: torch.Generator, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """The (N, H, W) squares that `cutout` hides in a batch of `shape` (N, C, H, W), drawn from the (CPU)
    `generator` and built on `device`."""
    n, _, h, w = shape
    top = torch.randint(0, h, (n,), generator=generator).to(device)[:, None] - size // 2
    left = torch.randint(0, w, (n,), generator=generator).to(device)[:, None] - size // 2
    rows, cols = torch.arange(h, device=device)[None], torch.arange(w, device=device)[None]
    in_rows = (rows >= top) & (rows < top + size)
    in_cols = (cols >= left) & (cols < left + size)
    return in_rows[:, :, None] & in_cols[:, None, :]


def _step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 100_003 + epoch) * 1_000_003 + step)


def epoch_order(length: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The order of the examples in `epoch`: a permutation fixed by (seed, epoch), or the identity."""
    if not shuffle:
        return torch.arange(length)
    return torch.randperm(length, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


class TensorBatches:
    """Batches of an in-memory uint8 ImageSet, deterministic in (seed, epoch, step), made on `device` (the images
    are copied there once)."""

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        seed: int = 0,
        shuffle: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        cutout: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.data, self.batch_size, self.mean, self.std = data, batch_size, mean, std
        self.device = torch.device(device)
        self.images, self.labels = data.images.to(self.device), data.labels.to(self.device)
        self.augment, self.seed, self.cutout = augment, seed, cutout
        self.shuffle = augment if shuffle is None else shuffle
        self.rank, self.world_size = rank, world_size

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of `epoch`, from batch `start` on (for an exact resume)."""
        order = epoch_order(len(self.data), self.seed, epoch, self.shuffle).to(self.device)
        for step in range(start, len(self)):
            index = order[step * self.batch_size : (step + 1) * self.batch_size]
            images, labels = self.images[index], self.labels[index]
            hidden = None
            if self.augment:  # drawn for the whole global batch, so that every rank's slice is one process's
                generator = _step_generator(self.seed, epoch, step)
                images = pad_crop_flip(images, generator)
                if self.cutout:
                    hidden = cutout_mask(images.shape, self.cutout, generator, self.device)
            if self.world_size > 1:  # this rank's slice of the global batch
                images, labels = images.chunk(self.world_size)[self.rank], labels.chunk(self.world_size)[self.rank]
                hidden = None if hidden is None else hidden.chunk(self.world_size)[self.rank]
            images = normalize(images, self.mean, self.std)
            if hidden is not None:
                images = images.masked_fill(hidden[:, None], 0.0)
            yield images, labels


class _FileDataset(Dataset):
    """Decodes and transforms one file. A file that fails to decode is returned as its error message (the worker's
    own exception would reach the main process as "Caught DataError in DataLoader worker process 1")."""

    def __init__(self, data: ImageSet, transform: v2.Transform) -> None:
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor | str, int]:
        try:
            image = decode_image(self.data.files[index], self.data.files[index])
        except DataError as error:
            return str(error), int(self.data.labels[index])
        return self.transform(image), int(self.data.labels[index])


def _collate_readable(items: list[tuple[torch.Tensor | str, int]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A batch of the images that decoded, their labels, and the errors of those that did not."""
    good = [(image, label) for image, label in items if not isinstance(image, str)]
    errors = [image for image, _ in items if isinstance(image, str)]
    if not good:
        return torch.empty(0), torch.empty(0, dtype=torch.long), errors
    return torch.stack([image for image, _ in good]), torch.tensor([label for _, label in good]), errors


class FileBatches:
    """Batches of large images decoded by DataLoader workers: random-resized crop and flip for training,
    resize and center crop for evaluation (torchvision's ImageNet preprocessing)."""

    def __init__(
        self,
        data: ImageSet,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        augment: bool,
        image_size: int = 224,
        seed: int = 0,
        workers: int = 2,
        rank: int = 0,
        world_size: int = 1,
        cutout: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        resize = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
        if not augment:
            resize = [v2.Resize(int(image_size * 256 / 224), antialias=True), v2.CenterCrop(image_size)]
        self.transform = v2.Compose(
            [v2.PILToTensor(), *resize, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        )
        self.data, self.batch_size, self.augment, self.seed, self.workers = data, batch_size, augment, seed, workers
        self.rank, self.world_size, self.cutout = rank, world_size, cutout
        self.skip_bad_images = skip_bad_images

    def __len__(self) -> int:
        return -(-len(self.data) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = epoch_order(len(self.data), self.seed, epoch, self.augment)[start * self.batch_size :]
        if self.world_size > 1:
            batches = order.split(self.batch_size)
            order = torch.cat([b.chunk(self.world_size)[self.rank] for b in batches if len(b) >= self.world_size])
        loader = DataLoader(
            _FileDataset(self.data, self.transform),
            batch_size=self.batch_size // self.world_size,
            sampler=order.tolist(),
            num_workers=self.workers,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(self.seed + epoch),
            collate_fn=_collate_readable,
        )
        for step, (images, labels, errors) in enumerate(loader, start=start):
            if errors and not self.skip_bad_images:
                raise DataError(f"{errors[0]} ({SKIP_HINT})")
            for error in errors:
                warnings.warn(f"skipped {error}", stacklevel=2)
            if not len(labels):
                continue  # every image of the batch was unreadable
            if self.augment and self.cutout:
                images = cutout(images, self.cutout, _step_generator(self.seed, epoch, step))
            yield images, labels


def make_batches(
    data: ImageSet,
    batch_size: int,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    augment: bool,
    image_size: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    **kw,
):
    """TensorBatches for decoded images (made on `device`), FileBatches for image files (made on the CPU).

    Example:
        >>> make_batches(val_set, 256, mean=mean, std=std, augment=False, image_size=32)
    """
    if data.images is not None:  # decoded already: unreadable files were dealt with then
        kw.pop("skip_bad_images", None)
        return TensorBatches(data, batch_size, mean=mean, std=std, augment=augment, seed=seed, device=device, **kw)
    return FileBatches(data, batch_size, mean=mean, std=std, augment=augment, image_size=image_size, seed=seed, **kw)


# The stratified 1,000-image CIFAR-10 sample that ships in the repository (demo, tests, calibration, export checks).
SAMPLE_ARCHIVE = Path(__file__).resolve().parents[3] / "data" / "cifar10-sample.tar.gz"


def sample_images(
    count: int,
    size: int,
    *,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    data: str | os.PathLike | None = None,
) -> torch.Tensor:
    """`count` real images spread over the classes of `data` (default: the embedded CIFAR-10 sample), normalized
    and resized to `size`: for int8 calibration and export checks.

    Example:
        >>> sample_images(64, 224).shape
        torch.Size([64, 3, 224, 224])
    """
    train, _ = load_dataset(data or SAMPLE_ARCHIVE)
    if train.images is None:
        raise ValueError(f"{data}: calibration and checks need small images decoded in memory")
    step = max(1, len(train) // count)
    images = normalize(train.images[::step][:count], mean, std)
    if images.shape[-1] != size:
        images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
    return images
