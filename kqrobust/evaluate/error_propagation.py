"""Error propagation: per-layer KL divergence, float against quantized (Park et al., Fig. 1)."""

import numpy as np

from kqrobust.evaluate.data import default_calibration
from kqrobust.evaluate.layer_outputs import stream_outputs
from kqrobust.evaluate.requantize import requantize
from kqrobust.ptq.calibration import calibration_array
from kqrobust.ptq.float_view import float_view
from kqrobust.quantized_layers import quantized_layers


def histogram_kl(p_counts, q_counts, eps=1e-10):
    """`KL(P || Q) = sum p log(p / q)` of two histograms on the same bins.

    Both histograms are normalised after adding `eps` to every bin, so empty
    bins of `Q` stay finite.
    """
    p = np.asarray(p_counts, "float64") + eps
    q = np.asarray(q_counts, "float64") + eps
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def _paired_batches(float_model, quantized_model, names, x, batch_size):
    return zip(
        stream_outputs(float_model, names, x, batch_size),
        stream_outputs(quantized_model, names, x, batch_size),
    )


def error_propagation(
    model,
    data,
    quantized_model=None,
    weight_bits=4,
    activation_bits=None,
    method="auto",
    calibration_data=None,
    bins=256,
    max_samples=512,
    first_last_bits=8,
    batch_size=256,
):
    """KL divergence between the float and quantized outputs of each layer.

    For every quantized Conv2D / DepthwiseConv2D / Dense layer (topological
    order), the values of its output over the data (all samples, positions
    and channels) form a histogram of `bins` bins on the range both models
    span; the result is `KL(P_float || P_quantized)` (`histogram_kl`). A
    growing KL along the depth is the error propagation of Park et al.'s
    Fig. 1.

    Args:
        model: the float (or robustified, or QAT) model; the reference is its
            `kq.ptq.float_view`.
        data: inputs, or `(x, y)`.
        quantized_model: the quantized model to compare (layer names as in
            `model`); default: `requantize(model, weight_bits,
            activation_bits, method)`.
        weight_bits, activation_bits, method, calibration_data,
            first_last_bits: for the default quantized model.
        bins: histogram bins.
        max_samples: inputs used (the first ones).
        batch_size: batch size.

    Returns:
        A list of rows `{"layer", "kl"}` in topological order.

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, Fig. 1 and sec. 3.1.
        See docs/methods.md#robustness-evaluations.
    """
    reference = float_view(model)
    x = calibration_array(data, reference, max_samples)
    if quantized_model is None:
        quantized_model = requantize(
            model,
            weight_bits,
            activation_bits,
            method,
            default_calibration(calibration_data, x),
            first_last_bits,
        )
    names = [layer.name for layer in quantized_layers(quantized_model)]
    lows = np.full(len(names), np.inf)
    highs = np.full(len(names), -np.inf)
    for outputs_f, outputs_q in _paired_batches(reference, quantized_model, names, x, batch_size):
        for i, (f, q) in enumerate(zip(outputs_f, outputs_q)):
            lows[i] = min(lows[i], f.min(), q.min())
            highs[i] = max(highs[i], f.max(), q.max())
    highs = np.maximum(highs, lows + 1e-12)
    counts_f = np.zeros((len(names), bins))
    counts_q = np.zeros((len(names), bins))
    for outputs_f, outputs_q in _paired_batches(reference, quantized_model, names, x, batch_size):
        for i, (f, q) in enumerate(zip(outputs_f, outputs_q)):
            counts_f[i] += np.histogram(f, bins, (lows[i], highs[i]))[0]
            counts_q[i] += np.histogram(q, bins, (lows[i], highs[i]))[0]
    return [
        {"layer": name, "kl": histogram_kl(counts_f[i], counts_q[i])}
        for i, name in enumerate(names)
    ]
