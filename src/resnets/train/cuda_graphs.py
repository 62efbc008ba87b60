"""A training step's forward and backward replayed as CUDA graphs.

On a GPU the CIFAR nets' kernels are so short that launching them one by one from Python, not running them, sets the
pace. A graph launches the whole forward (and, through autograd, the whole backward) as one call: on an H200,
resnet-20 at batch 128 trains at 42,700 img/s with graphs against 13,000 without (`python
benchmarks/train_throughput.py --device cuda`, and with `--eager`).

Example:
    >>> forward = GraphedForward(model)  # then, in the step: logits = forward(images)
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from resnets.errors import first_line


def cuda_graphs_pay(
    asked: bool | None, device: torch.device, world_size: int, *, compile_asked: bool | None = None
) -> bool:
    """Whether to replay the step's forward and backward as CUDA graphs: as asked, or (unset) on a CUDA device in
    one process, unless torch.compile was asked for (the two are not stacked). Graphs need one process: DDP's
    gradient all-reduce runs inside the backward.

    Example:
        >>> cuda_graphs_pay(None, torch.device("cpu"), 1)
        False
    """
    possible = device.type == "cuda" and world_size == 1
    if asked and not possible:
        raise ValueError("--cuda-graphs needs a CUDA device and one process (not torchrun)")
    if asked and compile_asked:
        raise ValueError("--cuda-graphs and --compile: choose one (graphs replace compiling on a GPU)")
    if asked is not None:
        return asked
    return possible and not compile_asked


class _Forward(nn.Module):
    """The model's forward under a module of its own, so that capturing it leaves the model's forward untouched
    (make_graphed_callables replaces the forward of the module it is given)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class GraphedForward:
    """`model(images)` for training, replayed from a CUDA graph for every batch of the shape it was captured with
    (the first training batch's); an epoch's shorter last batch and evaluation (eval mode) run eagerly.

    Capturing runs three warm-up steps on the first batch, which would move the batch-norm running statistics: they
    are put back, so a run (and an exact resume) sees the same statistics as an eager one. Where capturing fails
    and graphs were our own choice (`required=False`), training goes on eagerly with a warning.
    """

    def __init__(self, model: nn.Module, *, required: bool = False) -> None:
        self.model = model
        self.required = required
        self.graphed: nn.Module | None = None
        self.layout: tuple[torch.Size, tuple[int, ...], torch.dtype] | None = None
        self.failed = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if not self.model.training or self.failed:
            return self.model(images)
        if self.graphed is None:
            self._capture(images)
            if self.graphed is None:
                return self.model(images)
        if (images.shape, images.stride(), images.dtype) != self.layout:
            return self.model(images)
        return self.graphed(images)

    def _capture(self, images: torch.Tensor) -> None:
        saved = {name: buffer.clone() for name, buffer in self.model.named_buffers()}
        # The parameters' gradient accumulators are made on the capture's side stream and the graph keeps them, so
        # every replay hands them gradients from the main stream: torch warns once of the stream wait this adds,
        # which the speeds above already include. Expected here, so not the user's to see.
        quiet = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
        if quiet is not None:
            quiet(False)
        try:
            self.graphed = torch.cuda.make_graphed_callables(_Forward(self.model), (images.detach().clone(),))
            self.layout = (images.shape, images.stride(), images.dtype)
        except Exception as error:  # noqa: BLE001 - any failure to capture, when graphs were our own choice
            if self.required:
                raise
            self.failed = True
            warnings.warn(
                f"CUDA graph capture failed, training eagerly instead: {first_line(error, 200)}", stacklevel=3
            )
        finally:
            with torch.no_grad():
                for name, buffer in self.model.named_buffers():
                    buffer.copy_(saved[name])
