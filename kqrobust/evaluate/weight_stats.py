"""Weight statistics that show symmetry and saturation, per layer and pooled."""

import math

import numpy as np

from kqrobust.layers import QuantizeMixin
from kqrobust.layers import registry
from kqrobust.model_graph import flat_layers
from kqrobust.ptq.aciq import aciq_multiplier

HISTOGRAM_RANGE = 6.0  # standard deviations either side


def effective_kernels(model):
    """`{layer name: (kernel, number of channels)}` of the analysed layers.

    The kernel is the one the quantizer sees (`transformed_kernel()` for
    kqrobust layers: SatNL folded in); channels are the trailing axes that
    get one weight step each.
    """
    kernels = {}
    for layer in flat_layers(model):
        if isinstance(layer, QuantizeMixin):
            kernel, axis = layer.transformed_kernel(), layer.kernel_channel_axis
        elif registry.is_quantizable(layer):
            kernel, axis = layer.kernel, registry.kernel_channel_axes(layer)
        else:
            continue
        kernel = np.asarray(kernel, "float64")
        axes = () if axis is None else (axis,) if isinstance(axis, int) else axis
        kernels[layer.name] = (kernel, math.prod(kernel.shape[a] for a in axes))
    return kernels


def symmetry_loss(columns):
    """SymReg's `L_sym1` (Park et al., ECCV 2022, eq. 8) of an `(N, C)` array of channel weights.

    `2/(C*N) * sum_c sum_{i=1..floor(N/2)} |w_(i) + w_(N+1-i)|`.
    """
    n, c = columns.shape
    ordered = np.sort(columns, axis=0)
    half = n // 2
    pairs = ordered[:half] + ordered[::-1][:half]
    return float(2.0 / (c * n) * np.abs(pairs).sum())


def kurtosis(values):
    """`mean(((W - mu) / sigma)^4)` over all of `values` (KURE's definition)."""
    values = np.asarray(values, "float64").ravel()
    sigma = values.std()
    return float(np.mean(((values - values.mean()) / max(sigma, 1e-12)) ** 4))


def layer_statistics(kernel, num_channels, clip_bits=4):
    """Symmetry and saturation statistics of one kernel.

    Returns:
        `{"symmetry": L_sym1 / mean|w|` (0 for a perfectly symmetric
        kernel), `"kurtosis"` (1.8 uniform, 3 Gaussian, 6 Laplace),
        `"clipped_fraction"`: the share of weights beyond the per-channel
        ACIQ-Laplace clip at `clip_bits`, `"max_over_std"`: the mean over
        channels of `max|w| / std` (long tails give large values)}.
    """
    columns = kernel.reshape(-1, num_channels)
    scale = np.mean(np.abs(columns - columns.mean(axis=0)), axis=0)
    alpha = aciq_multiplier(clip_bits, "laplace") * scale
    std = np.maximum(columns.std(axis=0), 1e-12)
    return {
        "symmetry": symmetry_loss(columns) / max(float(np.abs(columns).mean()), 1e-12),
        "kurtosis": kurtosis(columns),
        "clipped_fraction": float(np.mean(np.abs(columns) > alpha)),
        "max_over_std": float(np.mean(np.abs(columns).max(axis=0) / std)),
    }


def weight_statistics(model, bins=81, clip_bits=4):
    """Per-layer statistics and a pooled histogram of standardised weights.

    Args:
        model: a float, robustified or quantized model.
        bins: histogram bins over `[-6, 6]` standard deviations.
        clip_bits: bit-width of the ACIQ clip of `clipped_fraction`.

    Returns:
        `{"layers": {name: layer_statistics}, "histogram": {"edges",
        "counts"}}`; the histogram pools `w / std_c` (each channel's weights
        over their standard deviation) of every analysed layer, clipped to
        the range.
    """
    layers, pooled = {}, []
    for name, (kernel, channels) in effective_kernels(model).items():
        layers[name] = layer_statistics(kernel, channels, clip_bits)
        columns = kernel.reshape(-1, channels)
        pooled.append((columns / np.maximum(columns.std(axis=0), 1e-12)).ravel())
    values = np.clip(np.concatenate(pooled), -HISTOGRAM_RANGE, HISTOGRAM_RANGE)
    counts, edges = np.histogram(values, bins, (-HISTOGRAM_RANGE, HISTOGRAM_RANGE))
    return {"layers": layers, "histogram": {"edges": edges.tolist(), "counts": counts.tolist()}}
