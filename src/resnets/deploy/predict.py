"""A trained model with the preprocessing and class names it was trained with: predict files, evaluate data.

Example:
    >>> predictor = Predictor.load("resnet20", weights="runs/r20/model.safetensors")
    >>> predictor.predict_files(["cat.png"], topk=3)
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from resnets.data import (
    IMAGE_SUFFIXES,
    DataError,
    decode_image,
    images_under,
    load_dataset,
    make_batches,
    sample_images,
    stratified_split,
    warn_left_out,
)
from resnets.hardware import steady_host_memory
from resnets.models import ResNet, get_entry
from resnets.train.evaluate import evaluate
from resnets.train.run_folder import weights_source
from resnets.weights.metadata import WeightsMetadata
from resnets.weights.pretrained import load_trained, pretrained_for

PREDICT_BATCH = 64  # images a forward pass: enough to keep the kernels busy, few enough for any folder
EVAL_BATCH = 256  # a dataset's images a forward pass: it has them all at hand


@dataclasses.dataclass
class Predictor:
    """A model in eval mode (or several answering as one) plus its classes, input size and normalization."""

    model: nn.Module
    classes: list[str]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    runner: Callable[[torch.Tensor], torch.Tensor] | None = None  # the optimized path, once `optimize` ran
    held_out_fraction: float | None = None  # the training run's --val-fraction, where the weights record it

    def optimize(
        self, dtype: str = "auto", calibration: str | os.PathLike | None = None, *, batch_size: int = PREDICT_BATCH
    ) -> str:
        """Serve through `optimize_for_inference`, calibrated on real images (default: the embedded CIFAR-10
        sample), its runtime timed on `batch_size` (`EVAL_BATCH` for `evaluate_data`); returns a one-line
        description of the path chosen."""
        from resnets.inference.optimize import optimize_for_inference

        if not isinstance(self.model, ResNet):
            raise ValueError("an optimized path serves one net, not an ensemble: evaluate several nets without it")
        images = sample_images(256, self.image_size, mean=self.mean, std=self.std, data=calibration)
        fast = optimize_for_inference(self.model, dtype, calibration=images, batch_size=batch_size)
        self.runner = fast
        return f"{fast.dtype} on {fast.runtime}"

    @classmethod
    def load(
        cls, model_name: str | None, weights: str | os.PathLike | None = None, pretrained: bool = False
    ) -> Predictor:
        """The model with its weights (a file, or the run folder of `resnets train` that holds one); preprocessing
        and class names come from the weights' metadata. `model_name` None: the net the metadata names.

        Example:
            >>> Predictor.load(None, weights="runs/r20").classes[:2]
            ['airplane', 'automobile']
        """
        if (weights is None) == (not pretrained):
            raise ValueError("give exactly one of weights=PATH or pretrained=True")
        if pretrained and model_name is None:
            raise ValueError("pretrained=True needs model=NAME: which net's shipped weights to load")
        if model_name is not None and "," in model_name:
            return cls._ensemble(model_name, pretrained)
        path, recorded = (pretrained_for(model_name).path, None) if pretrained else weights_source(Path(weights))
        model, card = load_trained(path, model_name, recorded)
        predictor = cls(model.eval(), card.classes, card.image_size, card.mean, card.std)
        predictor.held_out_fraction = _recorded_val_fraction(card)
        return predictor

    @classmethod
    def _ensemble(cls, names: str, pretrained: bool) -> Predictor:
        """Several shipped nets answering as one, the mean of their logits: the teacher `resnets train --teacher`
        distils from, measured on its own. Preprocessing comes from the first; each net reads the batch through its
        own normalization."""
        from resnets.train.distill import load_teacher, split_teachers  # the ensemble is the distillation teacher's

        if not pretrained:
            raise ValueError(f"model={names!r}: several nets are evaluated from their shipped weights (pretrained)")
        members = split_teachers(names, named_by="model=")
        entry = pretrained_for(members[0])  # an unknown name fails here, before any file is read
        first = _shipped_metadata(members[0])
        natural_size = get_entry(members[0]).input_size[-1]  # as load_trained reads a file without 'image_size'
        card = WeightsMetadata.parse(first, entry.path, entry.num_classes, default_size=natural_size)
        model = load_teacher(  # names each other member that is not a shipped net, in its own words
            names, classes=card.classes, mean=card.mean, std=card.std, image_size=card.image_size, named_by="model="
        )
        # The ensemble has seen every image that any member trained on: one member on all of them is enough.
        fractions = [_val_fraction_in(meta) for meta in (first, *map(_shipped_metadata, members[1:]))]
        held_out = 0.0 if 0 in fractions else fractions[0]
        return cls(model.eval(), card.classes, card.image_size, card.mean, card.std, held_out_fraction=held_out)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """Resize (shorter side, then center crop) to the training size; normalize. Returns (3, S, S)."""
        size = self.image_size
        if image.size != (size, size):
            scale = size / min(image.size) if size <= 64 else (size * 256 / 224) / min(image.size)
            resized = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
            image = image.resize(resized, Image.BILINEAR)
            left, top = (image.width - size) // 2, (image.height - size) // 2
            image = image.crop((left, top, left + size, top + size))
        array = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (array - torch.tensor(self.mean).view(3, 1, 1)) / torch.tensor(self.std).view(3, 1, 1)

    def class_indices(self, data_classes: list[str], where: str) -> torch.Tensor:
        """For each of the data's classes, the index of the weights' class of the same name (case aside), so that
        folders in another order (or a subset of them) are scored against the right outputs. Weights that carry no
        class names (numbered 0..N-1) match by position; folders numbered 0..N-1 (labels saved as numbers) read as
        the weights' classes of those numbers, with a warning.

        Example:
            >>> predictor.class_indices(["cat", "airplane"], "data/")  # weights trained on CIFAR-10's ten
            tensor([3, 0])
        """
        numbered = self.classes == [str(i) for i in range(len(self.classes))]
        if numbered and len(data_classes) == len(self.classes):
            return torch.arange(len(data_classes))
        by_name = {name: index for index, name in enumerate(self.classes)}
        ignoring_case = {name.casefold(): index for index, name in enumerate(self.classes)}
        if len(ignoring_case) == len(by_name):  # "Cat" is cat where no two classes differ by case alone
            by_name = ignoring_case | by_name
        found = {name: by_name.get(name, by_name.get(name.casefold())) for name in data_classes}
        unknown = [name for name, index in found.items() if index is None]
        labels = [int(name) for name in unknown if name.isdecimal() and int(name) < len(self.classes)]
        if unknown and len(labels) == len(data_classes) == len(set(labels)):
            # Folders named by label number (CIFAR-10 saved from torchvision: 0 = airplane ... 9 = truck).
            named = ", ".join(f"{i} = {self.classes[i]}" for i in sorted(labels)[:3])
            message = f"{where}: class folders are numbered; read as the weights' classes by number ({named}, …)"
            warnings.warn(message, stacklevel=2)
            return torch.tensor(labels)
        if unknown:
            known = ", ".join(self.classes[:10]) + (", …" if len(self.classes) > 10 else "")
            raise DataError(
                f"{where}: class folder{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:3])} "
                f"{'are' if len(unknown) > 1 else 'is'} not among the weights' classes ({known})"
            )
        return torch.tensor([found[name] for name in data_classes])

    def predict_files(
        self, files: str | os.PathLike | Sequence[str | os.PathLike], topk: int = 5
    ) -> list[dict[str, Any]]:
        """One result per image, in order: its top-k classes, or the error that kept it from being read. A folder
        stands for the images in it and its subfolders, in sorted order; images go through the model 64 at a time,
        so a folder of any size fits in memory.

        Example:
            >>> predictor.predict_files(["cat.png", "photos/"], topk=3)[0]["top"][0]["class"]
        """
        if isinstance(files, str | os.PathLike):  # one path, not the characters of its name
            files = [files]
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise ValueError(f"topk={topk!r} must be a whole number from 1")
        results: list[dict[str, Any]] = []
        named = [image for file in files for image in _image_files(str(file))]
        with steady_host_memory(torch.device("cpu")):  # each batch reuses the last one's freed memory
            for start in range(0, len(named), PREDICT_BATCH):
                results += self._predict_batch(named[start : start + PREDICT_BATCH], topk)
        return results

    @torch.no_grad()
    def _predict_batch(self, named: list[tuple[str, str]], topk: int) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        batch, slots = [], []
        for file, problem in named:
            try:
                if problem:
                    raise DataError(problem)
                image = decode_image(Path(file), file)
                if min(image.size) < 2:
                    raise DataError(f"{file}: image is {image.width}x{image.height}, too small to classify")
                batch.append(self.preprocess(image))
                slots.append(len(results))
                results.append({"file": file})
            except DataError as error:
                results.append({"file": file, "error": str(error)})
        if batch:
            probabilities = (self.runner or self.model)(torch.stack(batch)).softmax(dim=1)
            k = min(topk, len(self.classes))
            values, indices = probabilities.topk(k, dim=1)
            for slot, row_values, row_indices in zip(slots, values, indices, strict=True):
                results[slot]["top"] = [
                    {"class": self.classes[i], "probability": round(float(p), 6)}
                    for p, i in zip(row_values.tolist(), row_indices.tolist(), strict=True)
                ]
        return results

    def evaluate_data(
        self,
        data: str | os.PathLike,
        *,
        split: str = "auto",
        flip: bool = False,
        val_fraction: float = 0.1,
        skip_bad_images: bool = False,
        cache_dir: str | os.PathLike | None = None,
    ) -> dict[str, float]:
        """Top-1/top-5 on a dataset: its val/test part, the fixed training hold-out (`val`), or all of it.
        Unreadable images stop it with their name, or, with `skip_bad_images`, are left out (`n` counts the rest).
        With `cache_dir` the decoded images are kept there, as training keeps them, for the next evaluation.

        Example:
            >>> predictor.evaluate_data("cifar10-test/", flip=True)["top1"]
        """
        if split not in ("auto", "val", "all"):
            raise ValueError(f"split {split!r} is not one of auto, val, all")
        train_set, val_set = load_dataset(data, cache_dir=cache_dir, skip_bad_images=skip_bad_images)
        skipped = train_set.skipped + (val_set.skipped if val_set is not None else 0)
        if skipped:
            warnings.warn(f"{data}: left out {skipped} unreadable image{'s' * (skipped != 1)}", stacklevel=2)
        to_weights = self.class_indices(train_set.classes, str(data))
        if split == "val":
            chosen = stratified_split(train_set, val_fraction)[1]  # the hold-out every run keeps, whatever its seed
            if self.held_out_fraction == 0:
                warnings.warn(
                    "these weights were trained on every image (--val-fraction 0): the val split is not held out "
                    "from them, so its figure is a training figure",
                    stacklevel=2,
                )
        elif split == "all":
            chosen = train_set
        else:
            chosen = val_set if val_set is not None else train_set
        if len(chosen) == 0:
            raise DataError(f"{data}: the {split} split holds no images to evaluate")
        chosen = dataclasses.replace(chosen, labels=to_weights[chosen.labels])
        batches = make_batches(
            chosen,
            EVAL_BATCH,
            mean=self.mean,
            std=self.std,
            augment=False,
            image_size=self.image_size,
            skip_bad_images=skip_bad_images,
        )
        return evaluate(self.runner or self.model, batches, torch.device("cpu"), flip=flip)


def _recorded_val_fraction(card: WeightsMetadata) -> float | None:
    """The --val-fraction that `resnets train` recorded in the weights' metadata; None for files from elsewhere."""
    return _val_fraction_in(card.extra)


def _shipped_metadata(name: str) -> dict[str, str]:
    """A shipped file's metadata alone (no tensors read)."""
    from safetensors import safe_open

    with safe_open(str(pretrained_for(name).path), framework="pt") as file:
        return file.metadata() or {}


def _val_fraction_in(metadata: dict[str, str]) -> float | None:
    try:
        return float(json.loads(metadata["recipe_fields"])["val_fraction"])
    except (KeyError, TypeError, ValueError):
        return None


def _image_files(name: str) -> list[tuple[str, str]]:
    """(file, problem) for each image `name` stands for: itself, or a folder's images; a problem names what is wrong
    (a missing path, a folder without images) so that the result for it says so and the others go on."""
    path = Path(name)
    if path.is_dir():
        found, others = images_under(path)
        warn_left_out(others, name)
        if not found:
            return [(name, f"{name}: a folder with no images in it ({', '.join(IMAGE_SUFFIXES)})")]
        return [(str(f), "") for f in found]
    return [(name, "" if path.is_file() else f"{name}: no such file")]
