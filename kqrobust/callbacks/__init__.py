"""Keras callbacks: probe curves during training, and a NaN guard."""

from kqrobust.callbacks.gradient_norm_logger import GradientNormLogger
from kqrobust.callbacks.hessian_trace_logger import HessianTraceLogger
from kqrobust.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = ["GradientNormLogger", "HessianTraceLogger", "TerminateOnNaN"]
