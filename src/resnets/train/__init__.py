"""Training: recipes, the loop, checkpoints, evaluation."""

from resnets.train.evaluate import evaluate
from resnets.train.loop import TrainingError, TrainResult, train
from resnets.train.recipes import RECIPES, Recipe, get_recipe

__all__ = ["RECIPES", "Recipe", "TrainResult", "TrainingError", "evaluate", "get_recipe", "train"]
