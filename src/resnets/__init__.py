"""resnets: the whole ResNet family on PyTorch.

Example:
    >>> import resnets
    >>> model = resnets.create_model("resnet20")

The names below load on first use (PEP 562), so that `import resnets.cli` costs nothing before the command starts:
a Ctrl-C while torch loads is then the command's own, answered in one line.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resnets.inference.optimize import optimize_for_inference
    from resnets.models import ModelConfig, ResNet, get_config, list_models
    from resnets.weights import convert, load_weights
    from resnets.weights.pretrained import create_model

__version__ = "0.1.0"
_EXPORTS = {
    "ModelConfig": "resnets.models",
    "ResNet": "resnets.models",
    "convert": "resnets.weights",
    "create_model": "resnets.weights.pretrained",
    "get_config": "resnets.models",
    "list_models": "resnets.models",
    "load_weights": "resnets.weights",
    "optimize_for_inference": "resnets.inference.optimize",
}
__all__ = [
    "ModelConfig",
    "ResNet",
    "__version__",
    "convert",
    "create_model",
    "get_config",
    "list_models",
    "load_weights",
    "optimize_for_inference",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'resnets' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later uses skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
