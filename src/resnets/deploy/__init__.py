"""Running trained models: prediction with their own preprocessing, and export to other runtimes (the fast
paths they run on, BN folded, bf16 and int8, are `resnets.inference`, which training's teachers use too)."""

from resnets.deploy.predict import Predictor

__all__ = ["Predictor"]
