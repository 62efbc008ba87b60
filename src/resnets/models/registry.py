"""Named networks: each one line, a config and where it comes from.

Example:
    >>> create_model("resnet20", num_classes=100)
    >>> list_models("resnext*")
    ['resnext101_32x8d', 'resnext101_64x4d', 'resnext50_32x4d']
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from typing import Any

from resnets.models.config import (
    IMAGENET_STAGES,
    Activation,
    Block,
    BottleneckStride,
    ConvBias,
    Downsample,
    ModelConfig,
    ShortcutOption,
    ShortcutVariant,
    Stem,
)
from resnets.models.resnet import ResNet


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registry entry: the config, the input size it is meant for, and its source."""

    name: str
    config: ModelConfig
    input_size: tuple[int, int, int]
    source: str

    @property
    def family(self) -> str:
        return "cifar" if self.config.stem is Stem.CIFAR else "imagenet"


_REGISTRY: dict[str, ModelEntry] = {}


def imagenet(depth: int, **fields: Any) -> ModelConfig:
    """An ImageNet ResNet at one of the paper's depths. Example: `imagenet(50, groups=32, width_per_group=4)`."""
    block, layers = IMAGENET_STAGES[depth]
    return ModelConfig(block=block, layers=layers, **fields)


def cifar(depth: int, block: Block = Block.BASIC, **fields: Any) -> ModelConfig:
    """A CIFAR ResNet (paper Sec. 4.2): 16/32/64 channels, depth 6n+2 (9n+2 with bottlenecks)."""
    base = ModelConfig(
        block=block,
        layers=(1, 1, 1),
        widths=(16, 32, 64),
        stem=Stem.CIFAR,
        stem_width=16,
        num_classes=10,
        **fields,
    )
    return base.with_depth(depth)


def input_size(config: ModelConfig) -> tuple[int, int, int]:
    """The (C, H, W) a network of this config is built for: 32x32 for the CIFAR stem, 224x224 otherwise."""
    side = 32 if config.stem is Stem.CIFAR else 224
    return (config.in_chans, side, side)


def register(name: str, config: ModelConfig, source: str) -> None:
    _REGISTRY[name] = ModelEntry(name, config, input_size(config), source)


# Keras builds BatchNormalization with epsilon=1.001e-5 in its ResNets (keras/applications/resnet.py).
KERAS = dict(norm_eps=1.001e-5)
PAPER = dict(bottleneck_stride=BottleneckStride.FIRST_1X1)
PREACT = dict(activation=Activation.FULL_PREACT)
# The depths each paper trained: ImageNet (ResNet paper, Table 1) and CIFAR-10 (Sec. 4.2, Table 6).
IMAGENET_DEPTHS = (18, 34, 50, 101, 152)
CIFAR_DEPTHS = (20, 32, 44, 56, 110, 1202)

for _depth in IMAGENET_DEPTHS:
    register(f"resnet{_depth}", imagenet(_depth), "torchvision; stride on the 3x3 (v1.5)")
    register(f"resnet{_depth}_paper", imagenet(_depth, **PAPER), "ResNet paper / Caffe release; stride on the 1x1")
    register(f"preact_resnet{_depth}", imagenet(_depth, **PREACT), "Identity Mappings paper; full pre-activation")
for _depth in (50, 101, 152):
    register(
        f"resnet{_depth}_keras",
        imagenet(_depth, **PAPER, conv_bias=ConvBias.ALL, **KERAS),
        f"keras.applications.ResNet{_depth}",
    )
    register(
        f"resnet{_depth}v2",
        imagenet(
            _depth,
            **PREACT,
            downsample=Downsample.LAST_BLOCK,
            conv_bias=ConvBias.UNNORMALIZED,
            stem_pool_zero_pad=True,
            **KERAS,
        ),
        f"keras.applications.ResNet{_depth}V2",
    )
for _depth in (18, 34):
    register(f"plain{_depth}", imagenet(_depth, shortcut_variant=ShortcutVariant.NONE), "ResNet paper, Table 2")

register("resnext50_32x4d", imagenet(50, groups=32, width_per_group=4), "ResNeXt paper; torchvision")
register("resnext101_32x8d", imagenet(101, groups=32, width_per_group=8), "ResNeXt paper; torchvision")
register("resnext101_64x4d", imagenet(101, groups=64, width_per_group=4), "ResNeXt paper; torchvision")
register("wide_resnet50_2", imagenet(50, width_per_group=128), "Wide ResNet paper; torchvision")
register("wide_resnet101_2", imagenet(101, width_per_group=128), "Wide ResNet paper; torchvision")

for _depth in CIFAR_DEPTHS:
    register(f"resnet{_depth}", cifar(_depth, shortcut=ShortcutOption.A), "ResNet paper, Sec. 4.2; option A")
    register(f"resnet{_depth}_b", cifar(_depth, shortcut=ShortcutOption.B), "ResNet paper, Sec. 4.2; option B")
for _depth in (20, 32, 44, 56, 110):
    register(f"plain{_depth}", cifar(_depth, shortcut_variant=ShortcutVariant.NONE), "ResNet paper, Fig. 6")
for _depth in (164, 1001):
    register(f"resnet{_depth}", cifar(_depth, Block.BOTTLENECK), "Identity Mappings paper, Table 3; original unit")
register("preact_resnet110", cifar(110, **PREACT), "Identity Mappings paper, Table 2")
for _depth in (164, 1001):
    register(f"preact_resnet{_depth}", cifar(_depth, Block.BOTTLENECK, **PREACT), "Identity Mappings paper, Table 3")


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style pattern, sorted.

    Example:
        >>> list_models("wide_*")
        ['wide_resnet101_2', 'wide_resnet50_2']
    """
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def get_entry(name: str) -> ModelEntry:
    """The registry entry of `name`; a clear error with suggestions when there is none."""
    if name not in _REGISTRY:
        spelled = {_spelling(known): known for known in _REGISTRY}
        close = [spelled[match] for match in difflib.get_close_matches(_spelling(name), spelled, n=3)]
        hint = f"; did you mean {', '.join(close)}?" if close else "; `resnets models` lists them"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _REGISTRY[name]


def _spelling(name: str) -> str:
    """A name as it is meant rather than typed: Keras' capitals (ResNet50), dashes, and a letter O among digits."""
    return re.sub(r"(?<=\d)o|o(?=\d)", "0", name.lower().replace("-", "_"))


def get_config(name: str, **overrides: Any) -> ModelConfig:
    """The config of a named model with `overrides` applied (`depth` rescales the stages).

    Example:
        >>> get_config("resnet20", depth=56).layers
        (9, 9, 9)
    """
    config = get_entry(name).config
    depth = overrides.pop("depth", None)
    if depth is not None:
        if isinstance(depth, bool) or not isinstance(depth, int | str) or not str(depth).lstrip("-").isdigit():
            raise ValueError(f"depth {depth!r} is not a whole number of layers")
        config = config.with_depth(int(depth))
    known = {field.name for field in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"model {name!r} has no option {unknown[0]!r}; options: depth, {', '.join(sorted(known))}")
    return dataclasses.replace(config, **overrides)


def create_model(name: str, **overrides: Any) -> ResNet:
    """Build a registered network, with any config field overridden.

    Example:
        >>> model = create_model("resnet50", num_classes=10, drop_path_rate=0.1)
    """
    model = ResNet(get_config(name, **overrides))
    model.name = name
    return model
