"""Shared test helpers: serialization checks, small models, NumPy references."""

from kqrobust.models.small_cnn import (
    small_cnn,  # its home is kq.models; kept here for tests and docs
)
from kqrobust.testing.scripts import run_script_report
from kqrobust.testing.test_case import TestCase

__all__ = ["TestCase", "run_script_report", "small_cnn"]
