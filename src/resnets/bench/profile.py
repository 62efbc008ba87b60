"""Size and cost of a model: parameters (counted as Keras counts them) and multiply-adds of one forward pass.

Example:
    >>> profile("resnet50").macs / 1e9
    4.089...
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

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


# Inputs up to this side are profiled by computing them on the CPU; larger ones on the meta device.
_LARGEST_INPUT_COMPUTED = 64


class _FlopCount(TorchDispatchMode):
    """torch's own FLOP formulas (convolution, matmul), summed over every op that runs.

    `FlopCounterMode` applies the same formulas, but it also attributes each op to every enclosing module and
    decomposes uncounted ops (batch norm) into primitives to look inside them: on resnet1202 that bookkeeping made
    the counted forward pass nearly three times as slow (2.9 s against 1.1 s on one core).
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        return out


def count_macs(model: nn.Module, input_size: tuple[int, ...], batch_size: int = 1) -> int:
    """Multiply-adds of one forward pass, by torch's FLOP formulas (which count 2 FLOPs per multiply-add).

    Runs one forward pass of zeros on the model's device.

    Example:
        >>> count_macs(create_model("resnet20"), (3, 32, 32))
        40551040
    """
    device = next(model.parameters()).device
    x = torch.zeros(batch_size, *input_size, device=device)
    with torch.no_grad(), _FlopCount() as counter:
        model.eval()(x)
    return counter.flops // 2


def profile(name: str, input_size: tuple[int, int, int] | None = None, **overrides) -> ModelProfile:
    """Parameters and multiply-adds of a registered model, from one forward pass of a single image.

    Small inputs run on the CPU, large ones on the meta device (shapes only). Meta kernels are Python, so a deep,
    thin CIFAR net costs more there than its real convolutions (resnet1202: 12 s against 2.5 s); a wide ImageNet
    net costs more on the CPU, where initializing its weights and computing 224x224 outweigh the per-op overhead
    (wide_resnet101_2: 5 s against 1 s).

    Example:
        >>> profile("resnet20").trainable
        269722
    """
    size = tuple(input_size or get_entry(name).input_size)
    device = "cpu" if max(size[1:]) <= _LARGEST_INPUT_COMPUTED else "meta"
    with torch.device(device):
        model = create_model(name, **overrides)
    trainable, non_trainable = count_parameters(model)
    return ModelProfile(name, size, trainable, non_trainable, count_macs(model, size))
