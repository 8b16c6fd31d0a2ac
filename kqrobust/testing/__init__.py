"""Shared test helpers: serialization checks, small models, NumPy references."""

from kqrobust.testing.models import small_cnn
from kqrobust.testing.test_case import TestCase

__all__ = ["TestCase", "small_cnn"]
