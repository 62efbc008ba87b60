"""Top-1 / top-5 accuracy and loss over a set of batches.

Example:
    >>> evaluate(model, val_batches, torch.device("cpu"), flip=True)
    {'loss': 0.31, 'top1': 0.912, 'top5': 0.997, 'n': 5000}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnets.hardware import steady_host_memory


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches,
    device: torch.device,
    *,
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
    flip: bool = False,
) -> dict[str, float]:
    """Accuracy of `model` on every batch of `batches.epoch(0)`; `flip` averages with the mirrored image."""
    was_training = model.training
    model.eval()
    loss_sum, top1, top5, count = 0.0, 0, 0, 0
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with steady_host_memory(device):  # each batch reuses the last one's freed memory
        for images, labels in batches.epoch(0):
            images = images.to(device, memory_format=memory_format)
            labels = labels.to(device)
            with autocast:
                logits = model(images).float()
                if flip:
                    logits = (logits + model(images.flip(3)).float()) / 2
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            ranked = logits.topk(min(5, logits.shape[1]), dim=1).indices
            top1 += (ranked[:, 0] == labels).sum().item()
            top5 += (ranked == labels[:, None]).any(1).sum().item()
            count += len(labels)
    model.train(was_training)
    return {"loss": loss_sum / count, "top1": top1 / count, "top5": top5 / count, "n": count}
