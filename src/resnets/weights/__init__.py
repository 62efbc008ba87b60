"""Weights from every ecosystem: read, map onto our names, check, load; convert to safetensors.

Example:
    >>> model = resnets.create_model("resnet50v2", weights="ResNet50V2.h5")
    >>> resnets.load_weights(model, "checkpoint.pth")
"""

from resnets.weights.loading import convert, load_weights, read_state_dict, save_safetensors
from resnets.weights.readers import WeightsError

__all__ = ["WeightsError", "convert", "load_weights", "read_state_dict", "save_safetensors"]
