"""Reading and writing the step of a layer's kernel or input quantizer."""

import math

import numpy as np

from kqrobust import validation

TENSORS = ("kernel", "input")


def quantizer_of(layer, tensor):
    """`(quantizer, weights)` of `layer`'s "kernel" or "input" quantizer."""
    if validation.one_of(tensor, "tensor", TENSORS) == "kernel":
        return layer.kernel_quantizer, layer.kernel_quantizer_weights
    return layer.input_quantizer, layer.input_quantizer_weights


def has_step(layer, tensor):
    """True when that quantizer exists and has a step (`Quantizer.has_step`)."""
    quantizer, _ = quantizer_of(layer, tensor)
    return quantizer is not None and quantizer.has_step


def step_variable(layer, tensor):
    """The step variable of that quantizer (`Quantizer.step`)."""
    quantizer, weights = quantizer_of(layer, tensor)
    return quantizer.step(weights)


def num_steps(layer, tensor):
    """How many steps the quantizer holds (channels, or 1 per tensor)."""
    return math.prod(step_variable(layer, tensor).shape)


def get_step(layer, tensor):
    """The step as a NumPy array of the variable's shape."""
    return np.asarray(step_variable(layer, tensor))


def set_step(layer, tensor, value):
    """Writes the step and marks the quantizer initialised (no lazy init)."""
    quantizer, weights = quantizer_of(layer, tensor)
    quantizer.set_step(weights, np.asarray(value, dtype="float32"))
