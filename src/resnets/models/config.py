"""The one configuration every ResNet in this library is built from.

Each difference between the papers and frameworks is an explicit enum whose values say where
they come from, so that a config printed on screen tells which network it is.

Example:
    >>> ModelConfig(block=Block.BASIC, layers=(2, 2, 2, 2)).depth
    18
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable
from enum import Enum

from torch import nn


class Block(str, Enum):
    """Residual unit shape (ResNet paper, Fig. 5)."""

    BASIC = "basic"  # two 3x3 convs: ResNet-18/34 and the CIFAR nets
    BOTTLENECK = "bottleneck"  # 1x1 reduce, 3x3, 1x1 expand (x4): ResNet-50 and deeper

    @property
    def expansion(self) -> int:
        return 4 if self is Block.BOTTLENECK else 1


class Stem(str, Enum):
    """The layers before the first stage."""

    IMAGENET = "imagenet"  # 7x7/2 conv and 3x3/2 max-pool (ResNet paper, Table 1)
    CIFAR = "cifar"  # one 3x3 conv, no pooling (ResNet paper, Sec. 4.2)


class BottleneckStride(str, Enum):
    """Which conv of a downsampling bottleneck carries the stride."""

    FIRST_1X1 = "first_1x1"  # ResNet paper, the original Caffe release, Keras ResNet50
    MIDDLE_3X3 = "middle_3x3"  # torchvision "v1.5", fb.resnet.torch, Keras ResNet50V2


class Downsample(str, Enum):
    """Which block of a stage halves the resolution."""

    FIRST_BLOCK = "first_block"  # both ResNet papers, torchvision, timm
    LAST_BLOCK = "last_block"  # Keras ResNetV2 (resnet_v2.py `stack2`): the last block of stages 1-3


class ShortcutOption(str, Enum):
    """Shortcut where a block changes shape (ResNet paper, Sec. 3.3 and Table 3)."""

    A = "A"  # identity with zero-padded channels, parameter-free (the paper's CIFAR nets)
    B = "B"  # 1x1 projection only where the shape changes (the paper's ImageNet nets, torchvision)
    C = "C"  # 1x1 projection on every block (Table 3; the V2 paper's "1x1 conv shortcut", Fig. 2e)


class ShortcutVariant(str, Enum):
    """How the shortcut is combined with the residual branch (Identity Mappings paper, Fig. 2, Table 1)."""

    IDENTITY = "identity"  # Fig. 2a: x + F(x)
    CONSTANT_SCALING = "constant_scaling"  # Fig. 2b: shortcut_scale * x + residual_scale * F(x)
    EXCLUSIVE_GATING = "exclusive_gating"  # Fig. 2c: (1 - g(x)) * x + g(x) * F(x)
    SHORTCUT_ONLY_GATING = "shortcut_only_gating"  # Fig. 2d: (1 - g(x)) * x + F(x)
    DROPOUT = "dropout"  # Fig. 2f: dropout(x) + F(x)
    NONE = "none"  # no shortcut at all: the paper's "plain" nets (ResNet paper, Fig. 6)


class Activation(str, Enum):
    """Where BN and ReLU sit in a residual unit (Identity Mappings paper, Fig. 4, Table 2)."""

    ORIGINAL = "original"  # Fig. 4a: conv-BN-ReLU-conv-BN, add, ReLU (ResNet v1)
    BN_AFTER_ADD = "bn_after_add"  # Fig. 4b: conv-BN-ReLU-conv, add, BN-ReLU
    RELU_BEFORE_ADD = "relu_before_add"  # Fig. 4c: conv-BN-ReLU-conv-BN-ReLU, add
    RELU_ONLY_PREACT = "relu_only_preact"  # Fig. 4d: ReLU-conv-BN-ReLU-conv-BN, add
    FULL_PREACT = "full_preact"  # Fig. 4e: BN-ReLU-conv-BN-ReLU-conv, add (ResNet v2)

    @property
    def is_full_preact(self) -> bool:
        return self is Activation.FULL_PREACT


class ConvBias(str, Enum):
    """Which convolutions carry a bias."""

    NONE = "none"  # torchvision, timm, the Caffe release: BN's shift makes a bias redundant
    ALL = "all"  # Keras ResNet50/101/152: every Conv2D keeps Keras's default use_bias=True
    UNNORMALIZED = "unnormalized"  # Keras ResNetV2: only convs not followed by BN (stem, shortcut, last conv)


class GlobalPool(str, Enum):
    AVG = "avg"
    MAX = "max"


class GroupNorm(nn.GroupNorm):
    """GroupNorm with BatchNorm's signature (channels, eps): 32 groups, or fewer where channels are few."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if num_channels % g == 0)
        super().__init__(groups, num_channels, eps=eps)


def norm_layer_named(name: str) -> Callable[..., nn.Module]:
    """'batch', 'group' or 'frozen_batch', for configs written as text (the command line, JSON)."""
    from torchvision.ops import FrozenBatchNorm2d

    layers = {"batch": nn.BatchNorm2d, "group": GroupNorm, "frozen_batch": FrozenBatchNorm2d}
    if name not in layers:
        raise ValueError(f"norm_layer={name!r} is not one of: {', '.join(layers)}")
    return layers[name]


# Blocks per stage for the paper's named depths (ResNet paper, Table 1; ResNet-200 from the V2 paper).
IMAGENET_STAGES: dict[int, tuple[Block, tuple[int, ...]]] = {
    18: (Block.BASIC, (2, 2, 2, 2)),
    34: (Block.BASIC, (3, 4, 6, 3)),
    50: (Block.BOTTLENECK, (3, 4, 6, 3)),
    101: (Block.BOTTLENECK, (3, 4, 23, 3)),
    152: (Block.BOTTLENECK, (3, 8, 36, 3)),
    200: (Block.BOTTLENECK, (3, 24, 36, 3)),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that distinguishes one ResNet from another.

    Example:
        >>> ModelConfig(block=Block.BOTTLENECK, layers=(3, 4, 6, 3))  # torchvision's resnet50
    """

    # Architecture
    block: Block = Block.BASIC
    layers: tuple[int, ...] = (2, 2, 2, 2)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem: Stem = Stem.IMAGENET
    stem_width: int = 64
    groups: int = 1
    width_per_group: int = 64
    bottleneck_stride: BottleneckStride = BottleneckStride.MIDDLE_3X3
    downsample: Downsample = Downsample.FIRST_BLOCK
    shortcut: ShortcutOption = ShortcutOption.B
    shortcut_variant: ShortcutVariant = ShortcutVariant.IDENTITY
    activation: Activation = Activation.ORIGINAL
    conv_bias: ConvBias = ConvBias.NONE
    # Keras (and timm's BiT stem) pad the stem's max-pool with zeros, torch with -inf: the same on a ReLU'd
    # input, different on a pre-activation net's raw stem conv.
    stem_pool_zero_pad: bool = False
    # Shortcut-variant parameters (Identity Mappings paper, Table 1)
    shortcut_scale: float = 0.5
    residual_scale: float = 1.0
    gate_bias: float = 0.0
    shortcut_dropout: float = 0.5
    # Options
    num_classes: int = 1000
    in_chans: int = 3
    norm_layer: Callable[..., nn.Module] = nn.BatchNorm2d
    norm_eps: float = 1e-5
    zero_init_residual: bool = False
    replace_stride_with_dilation: tuple[bool, ...] | None = None
    drop_path_rate: float = 0.0
    include_top: bool = True
    global_pool: GlobalPool | None = GlobalPool.AVG
    features_only: bool = False
    out_indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Accept plain strings and lists from a CLI or a JSON file; store the canonical types.
        coerce = {
            "block": Block,
            "stem": Stem,
            "bottleneck_stride": BottleneckStride,
            "downsample": Downsample,
            "shortcut": ShortcutOption,
            "shortcut_variant": ShortcutVariant,
            "activation": Activation,
            "conv_bias": ConvBias,
        }
        for name, enum in coerce.items():
            value = getattr(self, name)
            if not isinstance(value, enum):
                try:
                    object.__setattr__(self, name, enum(value))
                except ValueError:
                    choices = ", ".join(e.value for e in enum)
                    raise ValueError(f"{name}={value!r} is not one of: {choices}") from None
        if self.global_pool is not None and not isinstance(self.global_pool, GlobalPool):
            try:
                object.__setattr__(self, "global_pool", GlobalPool(self.global_pool))
            except ValueError:
                raise ValueError(f"global_pool={self.global_pool!r} is not one of: avg, max, None") from None
        if isinstance(self.norm_layer, str):
            object.__setattr__(self, "norm_layer", norm_layer_named(self.norm_layer))
        for name in ("layers", "widths", "replace_stride_with_dilation", "out_indices"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def counts(value: object) -> bool:  # whole numbers from 1, not True (an int to Python) nor 2.5
            return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1

        for name in ("num_classes", "in_chans", "stem_width", "groups", "width_per_group"):
            if not counts(getattr(self, name)):
                raise ValueError(f"{name}={getattr(self, name)!r} must be a whole number from 1")
        if not self.layers or not all(counts(n) for n in self.layers):
            raise ValueError(f"layers={self.layers} must be one or more positive block counts per stage")
        if not all(counts(width) for width in self.widths):
            raise ValueError(f"widths={self.widths} must be whole numbers of channels from 1")
        if len(self.widths) != len(self.layers):
            raise ValueError(f"widths={self.widths} must give one width per stage ({len(self.layers)} stages)")
        if self.block is Block.BASIC and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError("groups and width_per_group apply to bottleneck blocks only (ResNeXt, wide ResNet)")
        if self.groups < 1 or self.width_per_group < 1:
            raise ValueError("groups and width_per_group must be positive")
        if self.num_classes < 1 or self.in_chans < 1:
            raise ValueError(f"num_classes={self.num_classes} and in_chans={self.in_chans} must be positive")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate={self.drop_path_rate} must be in [0, 1)")
        if not 0.0 <= self.shortcut_dropout < 1.0:
            raise ValueError(f"shortcut_dropout={self.shortcut_dropout} must be in [0, 1)")
        dilation = self.replace_stride_with_dilation
        if dilation is not None:
            if len(dilation) != len(self.layers) - 1:
                raise ValueError(
                    f"replace_stride_with_dilation needs {len(self.layers) - 1} flags, one per downsampling stage;"
                    f" got {len(dilation)}"
                )
            if any(dilation) and self.downsample is Downsample.LAST_BLOCK:
                raise ValueError("replace_stride_with_dilation needs downsampling in the first block of a stage")
        if self.out_indices is not None:
            bad = [i for i in self.out_indices if not 0 <= i < len(self.layers)]
            if bad or not self.out_indices:
                raise ValueError(f"out_indices={self.out_indices} must name stages 0..{len(self.layers) - 1}")

    @property
    def depth(self) -> int:
        """Weighted layers: the stem conv, every conv of the residual branches, the classifier."""
        convs_per_block = 3 if self.block is Block.BOTTLENECK else 2
        return 2 + convs_per_block * sum(self.layers)

    @property
    def num_features(self) -> int:
        """Channels of the last feature map (the classifier's input)."""
        return self.stage_channels[-1]

    @property
    def stage_channels(self) -> tuple[int, ...]:
        return tuple(w * self.block.expansion for w in self.widths)

    def with_depth(self, depth: int) -> ModelConfig:
        """The same network at another depth, as the papers define depth.

        Example:
            >>> cifar_config.with_depth(56).layers
            (9, 9, 9)
        """
        if len(self.layers) == 3:  # CIFAR nets: three stages of n blocks (ResNet paper, Sec. 4.2)
            per_block = 3 if self.block is Block.BOTTLENECK else 2
            rule = f"{3 * per_block}n+2"
            n, rest = divmod(depth - 2, 3 * per_block)
            if rest or n < 1:
                raise ValueError(f"depth {depth} is not {rule}: a CIFAR {self.block.value} net has {rule} layers")
            return dataclasses.replace(self, layers=(n, n, n))
        if depth not in IMAGENET_STAGES:
            raise ValueError(f"depth {depth} is not an ImageNet ResNet depth: {sorted(IMAGENET_STAGES)}")
        block, layers = IMAGENET_STAGES[depth]
        if block is not self.block and (self.groups != 1 or self.width_per_group != 64):
            raise ValueError(f"depth {depth} uses {block.value} blocks, which cannot take groups/width_per_group")
        return dataclasses.replace(self, block=block, layers=layers)

    def describe(self) -> str:
        """The fields that differ from the defaults, one per line."""
        defaults = ModelConfig()
        lines = [f"ModelConfig(depth={self.depth},"]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value != getattr(defaults, field.name) or field.name in ("block", "layers"):
                shown = value.value if isinstance(value, Enum) else getattr(value, "__name__", value)
                lines.append(f"    {field.name}={shown!r},")
        return "\n".join(lines) + "\n)"
