"""Where BN and ReLU go (Identity Mappings paper, Table 2 and Fig. 4): full pre-activation trains best.

Example:
    >>> [run.label for run in runs(BUDGETS["fast"])][-1]
    'full pre-activation'
"""

from __future__ import annotations

from pathlib import Path

from resnets.reproduce.runner import Budget, Result, Run, variant_report

TITLE = "Activation order on CIFAR-10 (Identity Mappings paper, Table 2)"


def runs(budget: Budget) -> list[Run]:
    model = f"resnet{budget.ablation_depth}"
    return [
        Run("original", model, paper_error="6.61"),
        Run("BN after addition", model, {"activation": "bn_after_add"}, "8.17"),
        Run("ReLU before addition", model, {"activation": "relu_before_add"}, "7.84"),
        Run("ReLU-only pre-activation", model, {"activation": "relu_only_preact"}, "6.71"),
        Run("full pre-activation", model, {"activation": "full_preact"}, "6.37"),
    ]


def report(results: list[Result], out: Path) -> str:
    return variant_report(results, out, "The paper's column is ResNet-110 at 64k iterations (Table 2).")
