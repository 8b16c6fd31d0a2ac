"""kqrobust: robust quantization for Keras 3.

Learned-step QAT (LSQ) with robust-training recipes, post-training
quantization, robustness evaluation and verified full-integer export.
"""

import os as _os
import sys as _sys


def _run_as_command():
    """Whether this process is the `kqrobust` command or `python -m kqrobust.cli`."""
    script = (getattr(_sys, "argv", None) or [""])[0]
    argv = getattr(_sys, "orig_argv", [])
    return _os.path.basename(script) == "kqrobust" or any(
        a == "-m" and b == "kqrobust.cli" for a, b in zip(argv, argv[1:])
    )


# TensorFlow reads TF_CPP_MIN_LOG_LEVEL once, when it loads, and the imports below load it: the
# command hides TF's start-up logs unless the user set a level, including the records TF logs
# through absl before absl logging is initialized, which ignore the level (kqrobust/tf_startup.py).
# Imported as a library, kqrobust leaves the logging of the user's process alone.
if _run_as_command():
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from kqrobust import tf_startup as _tf_startup

    _tf_startup.import_tensorflow()

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
from kqrobust import techniques
from kqrobust import testing
from kqrobust import training
from kqrobust import transforms
from kqrobust.configs import Recipe
from kqrobust.int32_biases import round_biases_to_int32
from kqrobust.quantize import quantize_model
from kqrobust.recalibration import recalibrate_batchnorm
from kqrobust.robustify import robustify
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
    "round_biases_to_int32",
    "robustify",
    "save_model",
    "techniques",
    "testing",
    "training",
    "transforms",
]
