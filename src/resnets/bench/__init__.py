"""Measuring models: sizes, multiply-adds, summaries, timings."""

from resnets.bench.profile import ModelProfile, count_macs, count_parameters, profile

__all__ = ["ModelProfile", "count_macs", "count_parameters", "profile"]
