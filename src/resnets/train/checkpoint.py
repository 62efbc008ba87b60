"""Checkpoints that hold everything needed to continue exactly, written atomically.

Example:
    >>> state = load_checkpoint(Path("runs/r20/checkpoint.pt"), model, optimizer, scaler)
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resnets.atomic import atomic_write
from resnets.errors import first_line
from resnets.weights.readers import WeightsError, load_plain_torch


def save_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    state: dict,
    ema: nn.Module | None = None,
    weights_card: dict[str, str] | None = None,
) -> None:
    """Model, optimizer, scaler, loop position and RNG states (and the weights' moving average, when the run keeps
    one); a crash mid-write leaves the previous file. `weights_card` (the net, classes and preprocessing, as
    `WeightsMetadata.to_strings`) lets the file be evaluated away from its run folder."""
    payload = {
        "model": model.state_dict(),
        **({"weights_card": weights_card} if weights_card else {}),
        **({"ema": ema.state_dict()} if ema is not None else {}),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "state": state,
        "rng": {
            "torch": torch.get_rng_state(),
            "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
            "python": random.getstate()[1],
        },
    }
    atomic_write(path, lambda temporary: torch.save(payload, temporary), kept="the last good checkpoint")


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    ema: nn.Module | None = None,
) -> dict[str, Any]:
    """Restore a run saved by `save_checkpoint`; returns the loop state (epoch, position, step, history)."""
    if not path.is_file():
        raise WeightsError(f"{path}: no checkpoint to resume from")
    payload = load_plain_torch(path)
    if not isinstance(payload, dict) or "model" not in payload:
        raise WeightsError(f"{path}: not a checkpoint of `resnets train` (no model, optimizer and step to resume)")
    if ema is not None and "ema" not in payload:
        raise WeightsError(f"{path}: the run kept no moving average of its weights; resume it without --ema-decay")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scaler.load_state_dict(payload["scaler"])
        if ema is not None:
            ema.load_state_dict(payload["ema"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise WeightsError(f"{path}: does not fit this run ({first_line(error)})") from None
    torch.set_rng_state(payload["rng"]["torch"])
    numpy_state = np.random.get_state()
    np.random.set_state((numpy_state[0], payload["rng"]["numpy"].numpy().astype(np.uint32), *numpy_state[2:]))
    random.setstate((3, tuple(payload["rng"]["python"]), None))
    return payload["state"]
