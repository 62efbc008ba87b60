"""resnets: the whole ResNet family on PyTorch.

Example:
    >>> import resnets
    >>> model = resnets.create_model("resnet20")
"""

from resnets.deploy.optimize import optimize_for_inference
from resnets.models import ModelConfig, ResNet, get_config, list_models
from resnets.weights import convert, load_weights
from resnets.weights.pretrained import create_model

__version__ = "0.1.0"
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
