"""Which layers of a model are kqrobust layers, and which of them quantize.

One answer for PTQ, evaluation, BatchNorm re-estimation and the tests, over
the layers `model_graph.flat_layers` lists (nested models flattened).
"""

from kqrobust import model_graph
from kqrobust.layers import QuantIdentity
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


def step_holders(model, tensor):
    """The layers of `model` whose "kernel" or "input" quantizer has a step,
    in topological order. For "input" these are the quantized layers with an
    input quantizer and the `QuantIdentity` layers that quantize a tensor
    several quantized layers read in their place (`layer_input`)."""

    def quantizer(layer):
        if isinstance(layer, QuantizeMixin):
            return layer.kernel_quantizer if tensor == "kernel" else layer.input_quantizer
        if tensor == "input" and isinstance(layer, QuantIdentity) and layer.layer_input:
            return layer.input_quantizer
        return None

    return [
        layer
        for layer in model_graph.flat_layers(model)
        if quantizer(layer) is not None and quantizer(layer).has_step
    ]


def input_quantizer_holders(model):
    """`{layer name: holder}` for the quantized layers of `model` whose input is
    quantized: the layer itself, or the `QuantIdentity` it reads, directly or
    through pooling and reshapes (a tensor several layers read, or on a fixed
    grid, has one quantizer for all its readers; `kq.tensor_coverage`).
    `holder.input_quantizer` and `holder.input_quantizer_weights` are the
    quantizer and its variables."""
    from kqrobust.export.tensors import keeps_scale  # export imports this module

    feeds = model_graph.inbound_layers(model)
    readers = model_graph.consumers(model)
    by_name = {layer.name: layer for layer in model.layers}

    def identity_read_by(name):
        sources = feeds.get(name, [])
        while len(sources) == 1 and sources[0] in by_name:
            source = by_name[sources[0]]
            if isinstance(source, QuantIdentity):
                return source
            if not keeps_scale(source, [by_name.get(r) for r in readers.get(source.name, [])]):
                return None
            sources = feeds.get(source.name, [])
        return None

    holders = {}
    for layer in quantized_layers(model):
        holder = layer if layer.input_quantizer is not None else identity_read_by(layer.name)
        if holder is not None:
            holders[layer.name] = holder
    return holders
