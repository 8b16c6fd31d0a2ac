"""Keras callbacks: BatchNorm recalibration, probe curves, a NaN guard and robust backups."""

from kqrobust.callbacks.backup_and_restore import BackupAndRestore
from kqrobust.callbacks.batchnorm_recalibration import BatchNormRecalibration
from kqrobust.callbacks.gradient_norm_logger import GradientNormLogger
from kqrobust.callbacks.hessian_trace_logger import HessianTraceLogger
from kqrobust.callbacks.terminate_on_nan import TerminateOnNaN

__all__ = [
    "BackupAndRestore",
    "BatchNormRecalibration",
    "GradientNormLogger",
    "HessianTraceLogger",
    "TerminateOnNaN",
]
