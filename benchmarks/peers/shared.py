"""What both sides of the peer benchmark share: data files, weights by name, JSON.

Keras-free (NumPy only): the tfmot side runs under tf_keras in its own
process, the kqrobust side under Keras 3, and both import this module.
"""

import json
import os
import re
import sys

import numpy as np

DATA_FILE = "digits.npz"
FLOAT_WEIGHTS_FILE = "float_digits_weights.npz"
# A PTQ bit-width pair "w<weight bits>a<activation bits>", e.g. "w4a8".
BITS_PATTERN = re.compile(r"^w([2-8])a([2-8])$")

# benchmarks/common.py (timing helpers shared with the other benchmarks).
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def save_weights_by_name(model, path):
    """Saves every layer's weights as `<layer name>/<index>` in an `.npz`."""
    arrays = {
        f"{layer.name}/{i}": w for layer in model.layers for i, w in enumerate(layer.get_weights())
    }
    np.savez(path, **arrays)


def load_weights_by_name(model, path):
    """Loads `save_weights_by_name` output into a model with the same layer names.

    Raises:
        ValueError: if a layer of `model` has no saved weights or a shape differs
            (the two builders have drifted apart).
    """
    arrays = np.load(path)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        saved = [arrays.get(f"{layer.name}/{i}") for i in range(len(weights))]
        if any(s is None or s.shape != w.shape for s, w in zip(saved, weights)):
            raise ValueError(
                f"Layer '{layer.name}' does not match the saved float weights "
                f"(shapes {[w.shape for w in weights]}; saved "
                f"{[None if s is None else s.shape for s in saved]}). Fix: keep "
                "benchmarks/peers/tf_keras_models.py in step with kqrobust's builders."
            )
        layer.set_weights(saved)


def write_json(path, result):
    with open(path, "w") as f:
        json.dump(result, f, indent=2, sort_keys=True)


def read_json(path):
    with open(path) as f:
        return json.load(f)
