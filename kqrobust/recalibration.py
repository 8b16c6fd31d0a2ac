"""Forward passes that set state from data: activation steps and BatchNorm statistics.

Both run the model in training mode on data the user gives, with the input
perturbations (FPQ's SFP) off, and leave every other variable as it was.
"""

import contextlib
import weakref

import keras
import numpy as np
import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.inputs import batches as input_batches  # noqa: F401 (re-exported)
from kqrobust.inputs import read_inputs
from kqrobust.layers import check_initialized
from kqrobust.quantized_layers import kqrobust_layers

DEFAULT_STEP_SAMPLES = 512


@contextlib.contextmanager
def calibration_pass(model, keep=()):
    """Training-mode forwards of `model` that change no state but `keep` and LSQ steps.

    Turns every quantized layer's input perturbation (SFP) off and restores
    every non-trainable variable not in `keep` (BatchNorm statistics, EMA
    ranges, noise seeds) on exit.
    """
    layers = kqrobust_layers(model)
    perturbations = [layer.input_perturbation for layer in layers]
    kept = {id(v) for v in keep}
    saved = [
        (v, keras.ops.copy(v.value)) for v in model.non_trainable_variables if id(v) not in kept
    ]
    for layer in layers:
        layer.input_perturbation = None
    try:
        yield
    finally:
        for layer, perturbation in zip(layers, perturbations):
            layer.input_perturbation = perturbation
        for variable, value in saved:
            variable.assign(value)


def initialize_activation_steps(model, data, num_samples=DEFAULT_STEP_SAMPLES):
    """Sets the activation steps that never saw data, from `data`.

    One training-mode forward on the first `num_samples` inputs: each input
    quantizer initialises from the tensor it receives (LSQ: `s = 2 mean|x| /
    sqrt(Qp)`, Esser et al., ICLR 2020, sec. 2.1), exactly as on a first
    training batch. Nothing else changes.

    Args:
        model: a model built by `kq.quantize_model` (or any model with
            kqrobust quantized layers).
        data: inputs, `(x, y)`, or an iterable of batches.
        num_samples: how many samples to use, at most.

    Returns:
        The names of the layers whose input quantizer was initialised.

    Raises:
        ValueError: for empty data or a NaN/Inf input (named by batch and
            sample); no step is written then.
    """
    waiting = [
        layer
        for layer in model_graph.flat_layers(model)
        if hasattr(layer, "calibration_weights") and layer.calibration_weights()
    ]
    if not waiting:
        return []
    x = read_inputs(data, num_samples, what="calibration_data")
    state = [v for layer in waiting for v in layer.calibration_weights()]
    with calibration_pass(model, keep=state):
        model(x, training=True)
    return [layer.name for layer in waiting]


def batchnorm_layers(model):
    """The BatchNormalization layers whose statistics training updates."""
    return [
        layer
        for layer in model_graph.flat_layers(model)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]


_FORWARDS = weakref.WeakKeyDictionary()


def _training_forward(model, layers):
    """`model(x, training=True)` as a tf.function, traced once per model.

    The trace holds momentum 0 and no input perturbation, which is what
    every recalibration sets before calling it.
    """
    key = tuple(id(layer) for layer in layers)
    cached = _FORWARDS.get(model)
    if cached is None or cached[0] != key:
        model_ref = weakref.ref(model)  # the cache must not keep the model alive
        cached = (key, tf.function(lambda x: model_ref()(x, training=True), reduce_retracing=True))
        _FORWARDS[model] = cached
    return cached[1]


def recalibrate_batchnorm(model, data, num_samples=2048, batch_size=32):
    """Re-estimates every BatchNorm's moving statistics for the current weights.

    After quantization-aware training the moving averages describe weights
    that kept changing (low-bit weights oscillate across rounding
    boundaries), not the weights training ended with, and inference
    accuracy collapses; with Keras' default momentum 0.99 (0.999 in
    `keras.applications`) the averages also lag hundreds of steps behind.
    This is the fix of Nagel et al., "Overcoming Oscillations in
    Quantization-Aware Training", ICML 2022, sec. 4.1: run the final model in
    training mode over data and set each layer's statistics to the
    population mean and variance of its input. The variance is the
    population one, `mean_b(var_b + mu_b^2) - mu^2` over the batches `b`.

    Only BatchNorm statistics change (input perturbations are off, other
    state is restored). Works on any model, float ones included.
    `QuantModel.fit` calls it automatically; the callback
    `kq.callbacks.BatchNormRecalibration` does it in other training loops.

    Args:
        model: a Keras model.
        data: training inputs: an array, `(x, y)`, a `tf.data.Dataset` or
            an iterable of batches (labels are ignored).
        num_samples: how many samples to use, at most (Nagel et al. find a
            few thousand enough).
        batch_size: the batch size for array inputs.

    Returns:
        The names of the recalibrated layers.

    Example: `kq.recalibrate_batchnorm(qmodel, x_train)`, run in docs/qat.md
    ("BatchNorm under QAT").
    """
    layers = batchnorm_layers(model)
    if not layers:
        return []
    check_initialized(model, "re-estimate the BatchNorm statistics of")
    validation.positive_int(num_samples, "num_samples")
    momenta = [layer.momentum for layer in layers]
    sums = [[0.0, 0.0] for _ in layers]
    count = 0
    with calibration_pass(model):
        for layer in layers:
            layer.momentum = 0.0  # after a call, the moving statistics are the batch's
        try:
            forward = _training_forward(model, layers)
            for x in input_batches(data, batch_size, num_samples, what="data"):
                forward(x)
                n = int(x.shape[0])
                count += n
                for layer, acc in zip(layers, sums):
                    mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
                    var = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
                    acc[0] = acc[0] + n * mean
                    acc[1] = acc[1] + n * (var + mean * mean)
        finally:
            for layer, momentum in zip(layers, momenta):
                layer.momentum = momentum
    for layer, (sum_mean, sum_square) in zip(layers, sums):
        mean = sum_mean / count
        variance = np.maximum(sum_square / count - mean * mean, 0.0)
        if not (np.isfinite(mean).all() and np.isfinite(variance).all()):
            raise ValueError(
                f"BatchNorm recalibration of layer '{layer.name}' gave non-finite "
                "statistics: the data or the model holds NaN/Inf. Fix: check the "
                "inputs and that training did not diverge."
            )
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(variance.astype(np.float32))
    return [layer.name for layer in layers]
