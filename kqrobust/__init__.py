"""kqrobust: robust quantization for Keras 3.

Learned-step QAT (LSQ) with robust-training recipes, post-training
quantization, robustness evaluation and verified full-integer export.
"""

from kqrobust import callbacks
from kqrobust import configs
from kqrobust import datasets
from kqrobust import evaluate
from kqrobust import export
from kqrobust import layers
from kqrobust import models
from kqrobust import ops
from kqrobust import probes
from kqrobust import ptq
from kqrobust import quantizers
from kqrobust import regularizers
from kqrobust import testing
from kqrobust import training
from kqrobust import transforms
from kqrobust.configs import Recipe
from kqrobust.quantize import quantize_model
from kqrobust.robustify import robustify
from kqrobust.recalibration import recalibrate_batchnorm
from kqrobust.saving import load_model
from kqrobust.saving import save_model

__version__ = "0.1.0"

__all__ = [
    "Recipe",
    "callbacks",
    "configs",
    "datasets",
    "evaluate",
    "export",
    "layers",
    "load_model",
    "models",
    "ops",
    "probes",
    "ptq",
    "quantize_model",
    "quantizers",
    "recalibrate_batchnorm",
    "regularizers",
    "robustify",
    "save_model",
    "testing",
    "training",
    "transforms",
]
