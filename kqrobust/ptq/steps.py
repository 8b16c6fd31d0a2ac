"""Reading and writing the step of a layer's kernel or input quantizer."""

import math

import numpy as np

from kqrobust import model_graph
from kqrobust.layers import QuantizeMixin

TENSORS = ("kernel", "input")


def quantizer_of(layer, tensor):
    """`(quantizer, weights)` of `layer`'s "kernel" or "input" quantizer."""
    if tensor == "kernel":
        return layer.kernel_quantizer, layer.kernel_quantizer_weights
    if tensor == "input":
        return layer.input_quantizer, layer.input_quantizer_weights
    raise ValueError(f"tensor must be one of {list(TENSORS)}. Received: tensor={tensor!r}")


def has_step(layer, tensor):
    """True when that quantizer exists and has a step (LSQ, FixedRange)."""
    quantizer, weights = quantizer_of(layer, tensor)
    return quantizer is not None and "step" in weights


def num_steps(layer, tensor):
    """How many steps the quantizer holds (channels, or 1 per tensor)."""
    return math.prod(quantizer_of(layer, tensor)[1]["step"].shape)


def get_step(layer, tensor):
    """The step as a NumPy array of the variable's shape."""
    return np.asarray(quantizer_of(layer, tensor)[1]["step"])


def set_step(layer, tensor, value):
    """Writes the step and marks the quantizer initialised (no lazy init)."""
    _, weights = quantizer_of(layer, tensor)
    step = weights["step"]
    step.assign(np.reshape(np.asarray(value, dtype="float32"), step.shape))
    weights["initialized"].assign(np.ones(weights["initialized"].shape, "float32"))


def quantized_layers(model):
    """The layers of `model` with at least one quantizer, in topological order."""
    return [layer for layer in model_graph.flat_layers(model)
            if isinstance(layer, QuantizeMixin)
            and (layer.kernel_quantizer is not None or layer.input_quantizer is not None)]
