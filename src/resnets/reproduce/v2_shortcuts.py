"""Shortcut types (Identity Mappings paper, Table 1 and Fig. 2): anything but the identity hampers optimization.

Example:
    >>> [run.label for run in runs(BUDGETS["fast"])][:2]
    ['original (identity)', 'constant scaling 0.5 / 1']
"""

from __future__ import annotations

from pathlib import Path

from resnets.reproduce.runner import Budget, Result, Run, variant_report

TITLE = "Shortcut types on CIFAR-10 (Identity Mappings paper, Table 1)"


def runs(budget: Budget) -> list[Run]:
    model = f"resnet{budget.ablation_depth}"
    scaling = {"shortcut_variant": "constant_scaling"}
    return [
        Run("original (identity)", model, paper_error="6.61"),
        Run("constant scaling 0.5 / 1", model, {**scaling, "shortcut_scale": 0.5, "residual_scale": 1.0}, "fail"),
        Run("constant scaling 0.5 / 0.5", model, {**scaling, "shortcut_scale": 0.5, "residual_scale": 0.5}, "12.35"),
        Run("exclusive gating, b_g = -6", model, {"shortcut_variant": "exclusive_gating", "gate_bias": -6.0}, "8.70"),
        Run(
            "shortcut-only gating, b_g = 0",
            model,
            {"shortcut_variant": "shortcut_only_gating", "gate_bias": 0.0},
            "12.86",
        ),
        Run(
            "shortcut-only gating, b_g = -6",
            model,
            {"shortcut_variant": "shortcut_only_gating", "gate_bias": -6.0},
            "6.91",
        ),
        Run("1x1 conv shortcut", model, {"shortcut": "C"}, "12.22"),
        Run("dropout shortcut 0.5", model, {"shortcut_variant": "dropout", "shortcut_dropout": 0.5}, "fail"),
    ]


def report(results: list[Result], out: Path) -> str:
    note = (
        'The paper\'s column is ResNet-110 at 64k iterations; "fail" means above 20% error. Constant scaling is '
        "written shortcut / residual factor: the paper reports 0.5 / 1 as fail and 0.5 / 0.5 (frozen gating) as 12.35."
    )
    return variant_report(results, out, note)
