"""Calibration data: validation, and the inputs a layer sees on it."""

import keras
import numpy as np

from kqrobust import model_graph
from kqrobust.inputs import read_inputs


def calibration_array(data, model, max_samples=None):
    """Returns calibration inputs as one float32 NumPy array, validated.

    Args:
        data: an array of inputs `(N, ...)`, an `(x, y)` tuple (only `x` is
            used), or an iterable of batches (a `tf.data.Dataset` included)
            whose elements are arrays or `(x, y)` tuples.
        model: the model the data must fit (one input).
        max_samples: keep at most this many samples. None: all of an
            array, the first `kqrobust.inputs.MAX_ITERABLE_SAMPLES` (10,000)
            of an iterable, so an endless generator or a `.repeat()`
            dataset returns.

    Returns:
        A float32 array whose per-sample shape fits `model`'s input.

    Raises:
        ValueError: for an empty set, a NaN/Inf input (named by batch and
            sample), a model with several inputs, or a per-sample shape that
            does not fit the model's input.
    """
    x = read_inputs(data, max_samples, what="calibration_data")
    if len(model.inputs) != 1:
        raise ValueError(
            f"kq.ptq calibrates models with one input. Received: model "
            f"'{model.name}' with {len(model.inputs)} inputs."
        )
    expected = tuple(model.inputs[0].shape[1:])
    received = tuple(x.shape[1:])
    fits = len(expected) == len(received) and all(
        e is None or e == r for e, r in zip(expected, received)
    )
    if not fits:
        raise ValueError(
            "The calibration batch does not fit the model: each sample must have "
            f"shape {expected}. Received: calibration data of shape {x.shape} "
            f"(samples of shape {received}). Fix: pass inputs shaped like the "
            "model's training data."
        )
    return x.astype("float32", copy=False)


def layers_by_name(model):
    """All layers of `model` (nested models flattened), by name."""
    return {layer.name: layer for layer in model_graph.flat_layers(model)}


def layer_input(model, layer, x, batch_size=128):
    """The input `layer` receives when `model` runs on `x`, as NumPy.

    Args:
        model: a Functional model whose top level holds `layer`.
        layer: a layer called once in `model`.
        x: model inputs.
        batch_size: prediction batch size.

    Raises:
        ValueError: when `layer` sits inside a nested model or is shared.
    """
    if not any(layer is top for top in model.layers):
        raise ValueError(
            f"Layer '{layer.name}' is inside a nested model of '{model.name}'. "
            "Calibrating activations, reconstruction and the per-layer "
            "evaluations read layer inputs from the top-level graph. Fix: "
            "rebuild the model without nesting, or use weight-only PTQ "
            "(activation_bits=None, no bias correction, a data-free method)."
        )
    try:
        tensor = layer.input
    except (ValueError, AttributeError) as err:
        raise ValueError(
            f"Layer '{layer.name}' is called more than once in '{model.name}'; "
            f"its input is ambiguous. Shared layers are not supported: {err}"
        ) from err
    return predict_in_batches(keras.Model(model.inputs, tensor), x, batch_size)


def predict_in_batches(model, x, batch_size=128):
    """`model(x)` in inference mode, batch by batch, as NumPy.

    Calls the model directly rather than through `predict`, which compiles a
    new function for every model (PTQ and the sweeps build many).
    """
    wrap = isinstance(model.input, (list, tuple))
    outputs = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        outputs.append(model([batch] if wrap else batch, training=False))
    if isinstance(outputs[0], (list, tuple)):
        return [np.concatenate([np.asarray(o[i]) for o in outputs]) for i in range(len(outputs[0]))]
    return np.concatenate([np.asarray(o) for o in outputs])
