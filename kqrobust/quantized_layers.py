"""Which layers of a model are kqrobust layers, and which of them quantize.

One answer for PTQ, evaluation, BatchNorm re-estimation and the tests, over
the layers `model_graph.flat_layers` lists (nested models flattened).
"""

from kqrobust import model_graph
from kqrobust.layers import QuantizeMixin


def kqrobust_layers(model):
    """The kqrobust layers of `model` (quantized or with both quantizers
    None), in topological order."""
    return [layer for layer in model_graph.flat_layers(model) if isinstance(layer, QuantizeMixin)]


def quantized_layers(model):
    """The layers of `model` with at least one quantizer, in topological order."""
    return [
        layer
        for layer in kqrobust_layers(model)
        if layer.kernel_quantizer is not None or layer.input_quantizer is not None
    ]
