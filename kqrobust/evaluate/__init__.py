"""Robustness evaluations: bit-width and step-size sweeps, sensitivity, KL, reports.

Every function takes one trained model (float, robustified or QAT) and
re-quantizes it without fine-tuning (Park et al., ECCV 2022, sec. 3 and 5;
docs/methods.md#robustness-evaluations).
"""

from kqrobust.evaluate.bitwidth import bitwidth_sweep
from kqrobust.evaluate.data import accuracy
from kqrobust.evaluate.error_propagation import error_propagation
from kqrobust.evaluate.error_propagation import histogram_kl
from kqrobust.evaluate.level_sensitivity import level_sensitivity
from kqrobust.evaluate.output_variance import output_variance
from kqrobust.evaluate.report import robustness_report
from kqrobust.evaluate.requantize import requantize
from kqrobust.evaluate.requantize import rescale_steps
from kqrobust.evaluate.step_size import step_size_sweep
from kqrobust.evaluate.weight_stats import weight_statistics

__all__ = [
    "accuracy",
    "bitwidth_sweep",
    "error_propagation",
    "histogram_kl",
    "level_sensitivity",
    "output_variance",
    "requantize",
    "rescale_steps",
    "robustness_report",
    "step_size_sweep",
    "weight_statistics",
]
