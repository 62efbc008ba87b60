"""The ResNet family: one config, one network, a registry of named variants."""

from resnets.models.blocks import ResidualBlock, ShortcutMerge, ZeroPadShortcut
from resnets.models.config import (
    Activation,
    Block,
    BottleneckStride,
    ConvBias,
    Downsample,
    GlobalPool,
    ModelConfig,
    ShortcutOption,
    ShortcutVariant,
    Stem,
)
from resnets.models.registry import (
    CIFAR_DEPTHS,
    IMAGENET_DEPTHS,
    ModelEntry,
    cifar,
    create_model,
    get_config,
    get_entry,
    imagenet,
    input_size,
    list_models,
)
from resnets.models.resnet import ResNet, fold_batchnorm

__all__ = [
    "CIFAR_DEPTHS",
    "IMAGENET_DEPTHS",
    "Activation",
    "Block",
    "BottleneckStride",
    "ConvBias",
    "Downsample",
    "GlobalPool",
    "ModelConfig",
    "ModelEntry",
    "ResNet",
    "ResidualBlock",
    "ShortcutMerge",
    "ShortcutOption",
    "ShortcutVariant",
    "Stem",
    "ZeroPadShortcut",
    "cifar",
    "create_model",
    "fold_batchnorm",
    "get_config",
    "get_entry",
    "imagenet",
    "input_size",
    "list_models",
]
