"""Flattening nested Functional/Sequential models into one graph for export."""

import keras

from kqrobust import model_graph


def _like(model, tensor):
    """`tensor` in the structure of `model.input` (a one-element list or not)."""
    structure = model.input
    return type(structure)([tensor]) if isinstance(structure, (list, tuple)) else tensor


def needs_flattening(model):
    """True for a Sequential model or one that holds a graph model as a layer.

    (Keras' `clone_model` takes a `call_function` for Functional models only.)
    """
    return isinstance(model, keras.Sequential) or any(
        isinstance(layer, keras.Model) and model_graph.is_graph_model(layer)
        for layer in model.layers
    )


def flatten_model(model):
    """Returns a flat Functional model that calls the same layer objects.

    A Sequential model becomes the Functional chain of its layers. Every
    nested Sequential/Functional model (one input) is replaced by its own
    layers, wired to the outer tensors, so each tensor of the network is
    a layer output of one graph (which the export needs to give every tensor
    its own range). The layers, hence the weights, are shared with `model`.

    Args:
        model: a Sequential or Functional model with one input.

    Returns:
        A `keras.Model` computing the same function with no nested models.
    """

    def call_layer(layer, *args, **kwargs):
        if isinstance(layer, keras.Sequential):
            outputs = args[0]
            for inner_layer in layer.layers:
                outputs = call_layer(inner_layer, outputs)
            return outputs
        if isinstance(layer, keras.Model) and model_graph.is_graph_model(layer):
            if len(layer.inputs) != 1:
                raise ValueError(
                    f"kq.export flattens nested models with one input. Received: "
                    f"'{layer.name}' with {len(layer.inputs)} inputs."
                )
            inner = keras.models.clone_model(
                layer,
                input_tensors=_like(layer, args[0]),
                clone_function=lambda l: l,
                call_function=call_layer,
            )
            return inner.outputs[0] if len(inner.outputs) == 1 else inner.outputs
        return layer(*args, **kwargs)

    source = model.inputs[0]
    inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype, name=source.name)
    return keras.Model(inputs, call_layer(model, inputs), name=model.name)
