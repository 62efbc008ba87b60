"""Size and cost of a model without running it: parameters (counted as Keras counts them) and multiply-adds.

Example:
    >>> profile("resnet50").macs / 1e9
    4.089...
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from resnets.models import create_model, get_entry


@dataclasses.dataclass(frozen=True)
class ModelProfile:
    """Parameter counts and multiply-adds of one model at one input size."""

    name: str
    input_size: tuple[int, int, int]
    trainable: int
    non_trainable: int  # BN running mean and variance: Keras counts them as parameters, torch keeps buffers
    macs: int

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) parameters, with norm running statistics counted as non-trainable as Keras does.

    Example:
        >>> count_parameters(create_model("resnet50v2"))
        (25568360, 45440)
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable, frozen + stats


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass, by torch's own flop counter (which counts 2 FLOPs per multiply-add).

    Runs on the model's device; on the meta device nothing is computed, only shapes.
    """
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_size, device=device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(x)
    return counter.get_total_flops() // 2


def profile(name: str, input_size: tuple[int, int, int] | None = None, **overrides) -> ModelProfile:
    """Parameters and multiply-adds of a registered model, computed on the meta device (no memory, no time)."""
    size = tuple(input_size or get_entry(name).input_size)
    with torch.device("meta"):
        model = create_model(name, **overrides)
    trainable, non_trainable = count_parameters(model)
    return ModelProfile(name, size, trainable, non_trainable, count_macs(model, size))
