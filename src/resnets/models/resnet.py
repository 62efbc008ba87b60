"""The one ResNet network: a stem, stages of residual blocks, a head. Everything else is its config.

Example:
    >>> model = ResNet(ModelConfig(block=Block.BOTTLENECK, layers=(3, 4, 6, 3)))  # torchvision resnet50
    >>> model(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
"""

from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from resnets.models.blocks import ResidualBlock, _conv
from resnets.models.config import Activation, Downsample, GlobalPool, ModelConfig, Stem


def _stage_plan(config: ModelConfig) -> list[list[tuple[int, int]]]:
    """(stride, dilation) of every block, stage by stage.

    The first stage keeps the stem's resolution; each later stage halves it, or dilates instead
    when asked (`replace_stride_with_dilation`, as in torchvision: a dilated stage's first block
    still uses the previous dilation).
    """
    stage_strides = [1] + [2] * (len(config.layers) - 1)
    dilate = (False, *(config.replace_stride_with_dilation or [False] * (len(config.layers) - 1)))
    plan, dilation = [], 1
    for index, blocks in enumerate(config.layers):
        stride, previous = stage_strides[index], dilation
        if dilate[index]:
            dilation, stride = dilation * stride, 1
        dilations = [previous] + [dilation] * (blocks - 1)
        strides = [1] * blocks
        if config.downsample is Downsample.FIRST_BLOCK:
            strides[0] = stride
        elif index + 1 < len(config.layers):  # Keras V2: the last block halves for the next stage
            strides[-1] = stage_strides[index + 1]
        plan.append(list(zip(strides, dilations, strict=True)))
    return plan


class ResNet(nn.Module):
    """A ResNet of any kind in the family; `config` says which.

    `forward_features` returns the last feature map, `forward_head` classifies it; with
    `features_only=True` the model returns the maps of the stages named by `out_indices`
    (a backbone for detection or segmentation), described by `feature_info`.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self._build_stem(config)
        self.num_features = self._build_stages(config)
        self._build_head(config, self.num_features)
        self._init_stem()

    def _build_stem(self, config: ModelConfig) -> None:
        """conv1, bn1, relu, maxpool. A pre-activation net normalizes inside its first block, so its stem is one
        conv."""
        preact = config.activation is Activation.FULL_PREACT
        imagenet = config.stem is Stem.IMAGENET
        self.conv1 = _conv(
            config,
            followed_by_norm=not preact,
            kernel_size=7 if imagenet else 3,
            in_channels=config.in_chans,
            out_channels=config.stem_width,
            stride=2 if imagenet else 1,
        )
        self.bn1 = nn.Identity() if preact else config.norm_layer(config.stem_width, eps=config.norm_eps)
        self.relu = nn.Identity() if preact else nn.ReLU(inplace=True)
        if not imagenet:
            self.maxpool = nn.Identity()
        elif config.stem_pool_zero_pad:
            self.maxpool = nn.Sequential(nn.ZeroPad2d(1), nn.MaxPool2d(kernel_size=3, stride=2))
        else:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def _build_stages(self, config: ModelConfig) -> int:
        """layer1.. (torchvision's names) and their `feature_info`; returns the last stage's channels."""
        total_blocks = sum(config.layers)
        block_index, in_channels = 0, config.stem_width
        self.feature_info: list[dict] = []
        reduction = 4 if config.stem is Stem.IMAGENET else 1
        self.stage_names: list[str] = []
        for stage_index, (width, plan) in enumerate(zip(config.widths, _stage_plan(config), strict=True)):
            blocks = []
            for stride, dilation in plan:
                drop = config.drop_path_rate * block_index / max(total_blocks - 1, 1)
                blocks.append(
                    ResidualBlock(
                        config,
                        in_channels,
                        width,
                        stride=stride,
                        dilation=dilation,
                        drop_path=drop,
                        preact_shortcut=block_index == 0,
                    )
                )
                in_channels = width * config.block.expansion
                reduction *= stride
                block_index += 1
            name = f"layer{stage_index + 1}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            self.feature_info.append(dict(num_chs=in_channels, reduction=reduction, module=name))
        return in_channels

    def _build_head(self, config: ModelConfig, in_channels: int) -> None:
        """post_bn/post_relu (pre-activation units end on an addition; the last one still needs its activation),
        then global pooling and the classifier, or the stages' maps for `features_only`."""
        if config.activation is Activation.FULL_PREACT:
            self.post_bn = config.norm_layer(in_channels, eps=config.norm_eps)
            self.post_relu = nn.ReLU(inplace=True)
        elif config.activation is Activation.RELU_ONLY_PREACT:
            self.post_bn = nn.Identity()
            self.post_relu = nn.ReLU(inplace=True)
        else:
            self.post_bn = nn.Identity()
            self.post_relu = nn.Identity()
        if config.features_only:
            self.out_indices = config.out_indices or tuple(range(len(config.layers)))
            self.feature_info = [self.feature_info[i] for i in self.out_indices]
            self.global_pool, self.fc = nn.Identity(), nn.Identity()
        else:
            pool = {GlobalPool.AVG: nn.AdaptiveAvgPool2d(1), GlobalPool.MAX: nn.AdaptiveMaxPool2d(1), None: None}
            self.global_pool = pool[config.global_pool] or nn.Identity()
            if config.include_top and config.global_pool is None:
                raise ValueError("include_top=True needs a global_pool ('avg' or 'max') before the classifier")
            self.fc = nn.Linear(in_channels, config.num_classes) if config.include_top else nn.Identity()

    def _init_stem(self) -> None:
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        if self.conv1.bias is not None:
            nn.init.zeros_(self.conv1.bias)
        for norm in (self.bn1, self.post_bn):
            if isinstance(norm, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)

    @property
    def stages(self) -> list[nn.Sequential]:
        return [getattr(self, name) for name in self.stage_names]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, (N, num_features, H/32, W/32) for ImageNet nets."""
        x = self.forward_stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.post_relu(self.post_bn(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global pooling and the classifier; `pre_logits=True` stops before the classifier."""
        if self.config.global_pool is not None:
            x = torch.flatten(self.global_pool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.config.features_only:
            x = self.forward_stem(x)
            maps = []
            for index, stage in enumerate(self.stages):
                x = stage(x)
                if index in self.out_indices:
                    maps.append(x)
            return maps
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for `num_classes` classes, for fine-tuning.

        Example:
            >>> model.reset_classifier(10)
        """
        self.config = dataclasses.replace(self.config, num_classes=num_classes)
        self.fc = nn.Linear(self.num_features, num_classes)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An inference copy with every BatchNorm folded into the conv before it (torch.fx's own fuser); `model`
    itself is left as it was, training mode included.

    Example:
        >>> fold_batchnorm(create_model("resnet20"))(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).eval(), inplace=True)
