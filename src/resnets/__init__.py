"""resnets: the whole ResNet family on PyTorch.

Example:
    >>> import resnets
    >>> model = resnets.create_model("resnet20")
"""

from resnets.models import ModelConfig, ResNet, create_model, get_config, list_models

__version__ = "0.1.0"
__all__ = ["ModelConfig", "ResNet", "create_model", "get_config", "list_models", "__version__"]
