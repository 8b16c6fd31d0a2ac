"""Keras callbacks: BatchNorm recalibration, probe curves, and a NaN guard."""

from kqrobust.callbacks.batchnorm_recalibration import BatchNormRecalibration
from kqrobust.callbacks.gradient_norm_logger import GradientNormLogger
from kqrobust.callbacks.hessian_trace_logger import HessianTraceLogger
from kqrobust.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = ["BatchNormRecalibration", "GradientNormLogger", "HessianTraceLogger", "TerminateOnNaN"]
