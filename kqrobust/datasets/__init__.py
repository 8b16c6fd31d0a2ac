"""Datasets: the bundled digits (offline default)."""

from kqrobust.datasets.digits import load_digits

__all__ = ["load_digits"]
