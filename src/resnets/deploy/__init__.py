"""Running trained models: prediction with their own preprocessing, and export to other runtimes."""

from resnets.deploy.predict import Predictor

__all__ = ["Predictor"]
