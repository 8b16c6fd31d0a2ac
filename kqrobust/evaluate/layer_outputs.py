"""Streaming the outputs of named layers, batch by batch."""

import keras
import numpy as np

from kqrobust.layers import registry
from kqrobust.model_graph import flat_layers


def analysed_layer_names(model):
    """Names of the layers of a registered type (quantized or not)."""
    return [layer.name for layer in flat_layers(model) if registry.layer_type_of(layer) is not None]


def stream_outputs(model, names, x, batch_size=256, with_model_output=False):
    """Yields, per batch of `x`, the list of outputs of the layers `names`.

    Args:
        model: a Functional model whose top level holds those layers.
        names: layer names.
        x: inputs.
        batch_size: batch size.
        with_model_output: append the model's (first) output to each list.

    Raises:
        ValueError: for a name that is not a top-level layer of `model`.
    """
    top = {layer.name: layer for layer in model.layers}
    missing = [name for name in names if name not in top]
    if missing:
        raise ValueError(
            f"Layers {missing} are not top-level layers of model '{model.name}' "
            "(nested models are not analysed layer by layer). Top-level layers: "
            f"{list(top)}"
        )
    tensors = [top[name].output for name in names]
    if with_model_output:
        tensors.append(model.outputs[0])
    extractor = keras.Model(model.inputs, tensors)
    for start in range(0, len(x), batch_size):
        outputs = extractor([x[start : start + batch_size]], training=False)
        yield [np.asarray(o, dtype="float64") for o in outputs]
