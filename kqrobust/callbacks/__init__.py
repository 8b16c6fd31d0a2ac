"""Keras callbacks: BatchNorm re-estimation, int32 biases, probe curves, a NaN guard, backups."""

from kqrobust.callbacks.backup_and_restore import BackupAndRestore
from kqrobust.callbacks.batchnorm_recalibration import BatchNormRecalibration
from kqrobust.callbacks.gradient_norm_logger import GradientNormLogger
from kqrobust.callbacks.hessian_trace_logger import HessianTraceLogger
from kqrobust.callbacks.int32_bias_rounding import Int32BiasRounding
from kqrobust.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "BackupAndRestore",
    "BatchNormRecalibration",
    "GradientNormLogger",
    "HessianTraceLogger",
    "Int32BiasRounding",
    "TerminateOnNaN",
]
