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

    A basic unit has convs `conv1`, `conv2`; a bottleneck adds `conv3`. Each conv `convN` has one norm `bnN`: in a
    full pre-activation unit it runs before the conv, otherwise after it (after the addition for the last conv of a
    "BN after addition" unit). `preact_shortcut` makes an identity shortcut carry the pre-activated input: the V2
    paper does this for the first unit after the stem conv ("before splitting into two paths").
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
        self.activation = order = config.activation
        self.drop_path = drop_path
        self.preact = order in (Activation.FULL_PREACT, Activation.RELU_ONLY_PREACT)
        out_channels = width * config.block.expansion
        convs = _branch_convs(config, in_channels, width, stride, dilation)

        self.relu = nn.ReLU(inplace=True)
        if order is Activation.RELU_ONLY_PREACT:
            self.relu_in = nn.ReLU(inplace=False)  # the untouched input still feeds the shortcut
        for number, conv_args in enumerate(convs, start=1):
            last = number == len(convs)
            norm_before = order is Activation.FULL_PREACT
            norm_after_add = last and order is Activation.BN_AFTER_ADD
            if norm_before:
                self.add_module(f"bn{number}", self._norm(conv_args["in_channels"]))
            # A conv followed by a norm needs no bias (the next conv's pre-activation norm counts as following).
            followed_by_norm = not (last and (norm_before or norm_after_add))
            self.add_module(f"conv{number}", _conv(config, followed_by_norm=followed_by_norm, **conv_args))
            if not norm_before and not norm_after_add:
                self.add_module(f"bn{number}", self._norm(conv_args["out_channels"]))

        self.downsample = self._make_shortcut(config, in_channels, out_channels, stride)
        self.shortcut_from_preact = self.preact and (preact_shortcut or isinstance(self.downsample, nn.Sequential))
        self.merge = ShortcutMerge(config, in_channels, out_channels, stride)
        if order is Activation.BN_AFTER_ADD:
            self.add_module(f"bn{len(convs)}", self._norm(out_channels))
        self.reset_parameters()

    def _norm(self, channels: int) -> nn.Module:
        return self.config.norm_layer(channels, eps=self.config.norm_eps)

    def convs(self) -> list[nn.Module]:
        """The residual branch's convs, in order."""
        return [self.conv1, self.conv2] + ([self.conv3] if self.config.block is Block.BOTTLENECK else [])

    def norms(self) -> list[nn.Module]:
        """`bnN` for each `convN` (where it runs depends on the activation order)."""
        return [self.bn1, self.bn2] + ([self.bn3] if self.config.block is Block.BOTTLENECK else [])

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
        """He initialization (ResNet paper, Sec. 3.4); optionally a zero last layer so each block starts as identity."""
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
            # The branch's last layer: its last conv where no norm follows it inside the branch.
            ends_in_conv = self.activation in (Activation.FULL_PREACT, Activation.BN_AFTER_ADD)
            last = self.convs()[-1] if ends_in_conv else self.norms()[-1]
            if getattr(last, "weight", None) is not None:
                nn.init.zeros_(last.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_preact(x) if self.preact else self._forward_postact(x)

    def _forward_postact(self, x: torch.Tensor) -> torch.Tensor:
        """Original, BN after addition, ReLU before addition (V2 paper, Fig. 4a-c): conv, norm, relu ... add, relu."""
        convs, norms, activation = self.convs(), self.norms(), self.activation
        out = x
        for conv, norm in zip(convs[:-1], norms[:-1], strict=True):
            out = self.relu(norm(conv(out)))
        out = convs[-1](out)
        if activation is not Activation.BN_AFTER_ADD:
            out = norms[-1](out)
        if activation is Activation.RELU_BEFORE_ADD:
            out = self.relu(out)
        out = self.merge(self._drop_path(out), self.downsample(x), x)
        if activation is Activation.BN_AFTER_ADD:
            out = norms[-1](out)
        return out if activation is Activation.RELU_BEFORE_ADD else self.relu(out)

    def _forward_preact(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU-only and full pre-activation (V2 paper, Fig. 4d-e): activations before the convs, none after the add."""
        convs, norms = self.convs(), self.norms()
        if self.activation is Activation.FULL_PREACT:
            preactivated = self.relu(norms[0](x))
            out = convs[0](preactivated)
            for conv, norm in zip(convs[1:], norms[1:], strict=True):
                out = conv(self.relu(norm(out)))
        else:
            preactivated = self.relu_in(x)
            out = preactivated
            for conv, norm in zip(convs[:-1], norms[:-1], strict=True):
                out = self.relu(norm(conv(out)))
            out = norms[-1](convs[-1](out))
        shortcut = self.downsample(preactivated if self.shortcut_from_preact else x)
        return self.merge(self._drop_path(out), shortcut, x)

    def _drop_path(self, residual: torch.Tensor) -> torch.Tensor:
        if self.drop_path > 0.0:
            return stochastic_depth(residual, self.drop_path, mode="row", training=self.training)
        return residual
