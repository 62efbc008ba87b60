"""Running trained models: prediction with their own preprocessing."""

from resnets.deploy.predict import Predictor

__all__ = ["Predictor"]
