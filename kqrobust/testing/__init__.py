"""Shared test helpers: serialization checks, small models, NumPy references."""

from kqrobust.models.small_cnn import (
    small_cnn,  # its home is kq.models; kept here for tests and docs
)
from kqrobust.testing.scripts import run_script_report
from kqrobust.testing.test_case import TestCase

# small_cnn's quantizable layers as the recipe planner reads them: (name, kind, channel axes).
SMALL_CNN_LAYERS = [
    ("stem", "conv", -1),
    ("dw", "depthwise", (-2, -1)),
    ("pw", "conv", -1),
    ("conv2", "conv", -1),
    ("logits", "dense", -1),
]

__all__ = ["SMALL_CNN_LAYERS", "TestCase", "run_script_report", "small_cnn"]
