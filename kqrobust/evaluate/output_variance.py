"""Output variance of float and quantized models (Pang & Cai, arXiv:2503.11159, 2025, Fig. 1)."""

import numpy as np

from kqrobust.evaluate.layer_outputs import analysed_layer_names
from kqrobust.evaluate.layer_outputs import stream_outputs
from kqrobust.ptq.calibration import calibration_array


def _as_named_models(models):
    if isinstance(models, dict):
        if not models:
            raise ValueError("models must name at least one model. Received: {}")
        return models
    return {getattr(models, "name", "model"): models}


def output_variance(models, data, layer_names=None, max_samples=None, batch_size=256):
    """Variance of each model's output, and of each analysed layer's output.

    The variance is over all elements (samples, positions, channels) of a
    layer's output on the data, accumulated batch by batch in float64.

    Args:
        models: a model, or `{name: model}` (e.g. float, LSQ W4A4, FPQ W4A4).
        data: inputs, or `(x, y)`.
        layer_names: layers to measure in every model (top level); default:
            each model's Conv2D / DepthwiseConv2D / Dense layers.
        max_samples: inputs used (the first ones; None: all).
        batch_size: batch size.

    Returns:
        `{model name: {"output": variance, "layers": {layer name: variance}}}`.

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix", arXiv:2503.11159, 2025,
        Fig. 1. See docs/methods.md#robustness-evaluations.
    """
    result = {}
    for name, model in _as_named_models(models).items():
        x = calibration_array(data, model, max_samples)
        names = list(layer_names or analysed_layer_names(model))
        sums = np.zeros(len(names) + 1)
        squares = np.zeros(len(names) + 1)
        counts = np.zeros(len(names) + 1)
        for outputs in stream_outputs(model, names, x, batch_size, with_model_output=True):
            for i, values in enumerate(outputs):
                sums[i] += values.sum()
                squares[i] += np.square(values).sum()
                counts[i] += values.size
        variances = (squares / counts - np.square(sums / counts)).tolist()
        result[name] = {"output": variances[-1], "layers": dict(zip(names, variances))}
    return result
