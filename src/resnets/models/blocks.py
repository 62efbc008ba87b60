"""The residual unit: one class for basic and bottleneck blocks, every activation order and shortcut.

Parameter names follow torchvision (`conv1`, `bn1`, ..., `downsample.0`), so that torchvision and timm
state_dicts load as they are. Norm layers are numbered in the order they run: in a post-activation block
`bn1` follows `conv1`, in a pre-activation block it precedes it.

Example:
    >>> block = ResidualBlock(ModelConfig(), in_channels=64, width=64)
    >>> block(torch.randn(1, 64, 56, 56)).shape
    torch.Size([1, 64, 56, 56])
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import stochastic_depth

from resnets.models.config import (
    Activation,
    Block,
    BottleneckStride,
    ConvBias,
    ModelConfig,
    ShortcutOption,
    ShortcutVariant,
)


class ZeroPadShortcut(nn.Module):
    """Option A (ResNet paper, Sec. 3.3): subsample by striding, pad new channels with zeros.

    The zeros go half before and half after the existing channels, as the widely used
    CIFAR reproduction does, so that its trained weights give the same outputs here.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_channels - self.in_channels
        if extra == 0:
            return x
        return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class ShortcutMerge(nn.Module):
    """Combines the residual branch with the shortcut (Identity Mappings paper, Fig. 2)."""

    def __init__(self, config: ModelConfig, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.variant = config.shortcut_variant
        self.shortcut_scale = config.shortcut_scale
        self.residual_scale = config.residual_scale
        self.gate_bias = config.gate_bias
        gated = self.variant in (ShortcutVariant.EXCLUSIVE_GATING, ShortcutVariant.SHORTCUT_ONLY_GATING)
        # The gate g(x) = sigmoid(1x1 conv(x)); its bias sets how open the shortcut starts (Table 1).
        self.gate = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=True) if gated else None
        self.dropout = nn.Dropout(config.shortcut_dropout) if self.variant is ShortcutVariant.DROPOUT else None

    def forward(self, residual: torch.Tensor, shortcut: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        variant = self.variant
        if variant is ShortcutVariant.IDENTITY:
            return residual + shortcut
        if variant is ShortcutVariant.NONE:
            return residual
        if variant is ShortcutVariant.CONSTANT_SCALING:
            return self.residual_scale * residual + self.shortcut_scale * shortcut
        if variant is ShortcutVariant.DROPOUT:
            return residual + self.dropout(shortcut)
        gate = torch.sigmoid(self.gate(x))
        if variant is ShortcutVariant.EXCLUSIVE_GATING:
            return gate * residual + (1 - gate) * shortcut
        return residual + (1 - gate) * shortcut  # shortcut-only gating

    def extra_repr(self) -> str:
        return f"variant={self.variant.value}"


def _branch_convs(config: ModelConfig, in_channels: int, width: int, stride: int, dilation: int) -> list[dict]:
    """Conv arguments of the residual branch, in order."""
    out_channels = width * config.block.expansion
    if config.block is Block.BASIC:
        return [
            dict(in_channels=in_channels, out_channels=width, kernel_size=3, stride=stride, dilation=dilation),
            dict(in_channels=width, out_channels=out_channels, kernel_size=3, stride=1, dilation=dilation),
        ]
    inner = int(width * (config.width_per_group / 64.0)) * config.groups
    on_1x1 = config.bottleneck_stride is BottleneckStride.FIRST_1X1
    return [
        dict(in_channels=in_channels, out_channels=inner, kernel_size=1, stride=stride if on_1x1 else 1),
        dict(
            in_channels=inner,
            out_channels=inner,
            kernel_size=3,
            stride=1 if on_1x1 else stride,
            dilation=dilation,
            groups=config.groups,
        ),
        dict(in_channels=inner, out_channels=out_channels, kernel_size=1),
    ]


def _conv(config: ModelConfig, followed_by_norm: bool, kernel_size: int, dilation: int = 1, **kwargs) -> nn.Conv2d:
    bias = config.conv_bias is ConvBias.ALL or (config.conv_bias is ConvBias.UNNORMALIZED and not followed_by_norm)
    padding = dilation * (kernel_size // 2)
    return nn.Conv2d(kernel_size=kernel_size, padding=padding, dilation=dilation, bias=bias, **kwargs)


class ResidualBlock(nn.Module):
    """One residual unit, built from `config` (block shape, activation order, shortcut).

    `preact_shortcut` makes an identity shortcut carry the pre-activated input: the V2 paper does
    this for the first unit after the stem conv ("before splitting into two paths").
    """

    def __init__(
        self,
        config: ModelConfig,
        in_channels: int,
        width: int,
        stride: int = 1,
        dilation: int = 1,
        drop_path: float = 0.0,
        preact_shortcut: bool = False,
    ) -> None:
        super().__init__()
        self.config = config
        self.drop_path = drop_path
        order = config.activation
        out_channels = width * config.block.expansion
        convs = _branch_convs(config, in_channels, width, stride, dilation)
        last = len(convs) - 1
        norm_count = 0

        def add_norm(channels: int) -> str:
            nonlocal norm_count
            norm_count += 1
            name = f"bn{norm_count}"
            self.add_module(name, config.norm_layer(channels, eps=config.norm_eps))
            return name

        self.relu = nn.ReLU(inplace=True)
        # Steps run on the block input before the branch splits off (pre-activation orders).
        self._pre: list[str] = []
        if order is Activation.FULL_PREACT:
            self._pre = [add_norm(in_channels), "relu"]
        elif order is Activation.RELU_ONLY_PREACT:
            self.relu_in = nn.ReLU(inplace=False)  # the untouched input still feeds the shortcut
            self._pre = ["relu_in"]

        self._branch: list[str] = []
        for index, conv_args in enumerate(convs):
            norm_follows = order in (Activation.ORIGINAL, Activation.RELU_BEFORE_ADD, Activation.RELU_ONLY_PREACT)
            norm_follows = norm_follows or index < last
            if order is Activation.FULL_PREACT:
                norm_follows = index < last  # the next conv's pre-activation BN
            conv_name = f"conv{index + 1}"
            self.add_module(conv_name, _conv(config, followed_by_norm=norm_follows, **conv_args))
            self._branch.append(conv_name)
            if norm_follows:
                self._branch.append(add_norm(conv_args["out_channels"]))
            if index < last or order is Activation.RELU_BEFORE_ADD:
                self._branch.append("relu")

        self.downsample = self._make_shortcut(config, in_channels, out_channels, stride)
        self.shortcut_from_preact = bool(self._pre) and (preact_shortcut or isinstance(self.downsample, nn.Sequential))
        self.merge = ShortcutMerge(config, in_channels, out_channels, stride)

        self._post: list[str] = []
        if order is Activation.ORIGINAL:
            self._post = ["relu"]
        elif order is Activation.BN_AFTER_ADD:
            self._post = [add_norm(out_channels), "relu"]
        self.reset_parameters()

    @staticmethod
    def _make_shortcut(config: ModelConfig, in_channels: int, out_channels: int, stride: int) -> nn.Module:
        if config.shortcut_variant is ShortcutVariant.NONE:
            return nn.Identity()
        channels_change = in_channels != out_channels
        if config.shortcut is ShortcutOption.C or (config.shortcut is ShortcutOption.B and channels_change):
            # A pre-activated projection reads a normalized input, so it needs no norm of its own.
            with_norm = config.activation is not Activation.FULL_PREACT
            conv = _conv(
                config,
                followed_by_norm=with_norm,
                kernel_size=1,
                in_channels=in_channels,
                out_channels=out_channels,
                stride=stride,
            )
            norm = [config.norm_layer(out_channels, eps=config.norm_eps)] if with_norm else []
            return nn.Sequential(conv, *norm)
        if channels_change or stride > 1:
            # Option A; with unchanged channels this is Keras V2's 1x1 max-pool subsampling.
            return ZeroPadShortcut(in_channels, out_channels, stride)
        return nn.Identity()

    def reset_parameters(self) -> None:
        """He initialization (ResNet paper, Sec. 3.4); optionally a zero last norm so each block starts as identity."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if self.merge.gate is not None:
            nn.init.constant_(self.merge.gate.bias, self.config.gate_bias)
        if self.config.zero_init_residual:
            last = getattr(self, self._branch[-1] if self._branch[-1] != "relu" else self._branch[-2])
            if getattr(last, "weight", None) is not None:
                nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for name in self._pre:
            out = getattr(self, name)(out)
        shortcut = self.downsample(out if self.shortcut_from_preact else x)
        for name in self._branch:
            out = getattr(self, name)(out)
        if self.drop_path > 0.0:
            out = stochastic_depth(out, self.drop_path, mode="row", training=self.training)
        out = self.merge(out, shortcut, x)
        for name in self._post:
            out = getattr(self, name)(out)
        return out
