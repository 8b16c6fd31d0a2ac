"""Shared test helpers: serialization checks, small models, NumPy references."""

from kqrobust.testing.models import small_cnn
from kqrobust.testing.scripts import run_script_report
from kqrobust.testing.test_case import TestCase

__all__ = ["TestCase", "run_script_report", "small_cnn"]
