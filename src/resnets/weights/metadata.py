"""What a trained weights file says of itself: the safetensors metadata that `resnets train` writes and `predict`,
`eval` and `export` read back (model settings, class names, input size, normalization), in one place.

Example:
    >>> card = WeightsMetadata(model="resnet20", classes=["cat", "dog"], image_size=32)
    >>> WeightsMetadata.parse(card.to_strings(), "w.safetensors", num_classes=2).classes
    ['cat', 'dog']
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from resnets.data.loaders import IMAGENET_MEAN, IMAGENET_STD
from resnets.weights.readers import WeightsError


@dataclasses.dataclass(frozen=True)
class WeightsMetadata:
    """The preprocessing and labels a network was trained with; `extra` holds free notes (recipe, val_top1)."""

    model: str = ""
    model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    classes: list[str] = dataclasses.field(default_factory=list)  # empty: numbered 0..N-1
    image_size: int = 0  # 0: the model's natural input size
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    def to_strings(self) -> dict[str, str]:
        """safetensors metadata (strings only), as `resnets train` writes it."""
        return {
            "model": self.model,
            "model_overrides": json.dumps(self.model_overrides, default=str),
            "classes": json.dumps(list(self.classes)),
            "mean": json.dumps(list(self.mean)),
            "std": json.dumps(list(self.std)),
            "image_size": str(self.image_size),
            **{key: str(value) for key, value in self.extra.items()},
        }

    @classmethod
    def parse(cls, meta: dict[str, str], path: object, num_classes: int, default_size: int = 0) -> WeightsMetadata:
        """Read and check the metadata of `path` (whose classifier has `num_classes` outputs): a field that is not
        what training writes gets one line naming the file and the field; missing fields take their defaults."""

        def field(name: str, default: Any) -> Any:
            if name not in meta:
                return default
            try:
                return json.loads(meta[name])
            except json.JSONDecodeError:
                raise WeightsError(f"{path}: metadata {name!r} is not valid JSON: {meta[name][:40]!r}") from None

        overrides = field("model_overrides", {})
        classes = field("classes", [str(i) for i in range(num_classes)])
        image_size = field("image_size", default_size)
        mean, std = field("mean", list(IMAGENET_MEAN)), field("std", list(IMAGENET_STD))
        if not isinstance(overrides, dict):
            raise WeightsError(f"{path}: metadata 'model_overrides' must be a JSON object")
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            raise WeightsError(f"{path}: metadata 'classes' must be a JSON list of names")
        if len(classes) != num_classes:
            raise WeightsError(f"{path}: metadata names {len(classes)} classes but the classifier has {num_classes}")
        if not isinstance(image_size, int) or isinstance(image_size, bool) or not 8 <= image_size <= 4096:
            raise WeightsError(f"{path}: metadata 'image_size' {image_size!r} is not a size in pixels (8 to 4096)")
        for name, values in (("mean", mean), ("std", std)):
            finite = isinstance(values, list) and all(isinstance(v, int | float) and math.isfinite(v) for v in values)
            if not finite or len(values) != 3 or (name == "std" and min(values) <= 0):
                raise WeightsError(f"{path}: metadata {name!r} {values!r} is not three finite per-channel values")
        known = {"model", "model_overrides", "classes", "image_size", "mean", "std"}
        extra = {key: value for key, value in meta.items() if key not in known}
        return cls(meta.get("model", ""), overrides, classes, image_size, tuple(mean), tuple(std), extra)
