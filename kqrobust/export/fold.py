"""BatchNorm folding: `BN(op(x, K) + b)` as one layer `op(x, K') + b'`.

With `a_c = gamma_c / sqrt(var_c + eps)` per output channel `c`:
`K'[..., c] = a_c * K[..., c]` and `b'_c = a_c * (b_c - mean_c) + beta_c`.
A kernel on a per-channel grid `codes * s_c` stays on a grid with the same
integer codes and the step `|a_c| * s_c` (codes flip sign when `a_c < 0`),
so a folded 4-bit layer still has at most 15 distinct int8 values per
channel.

Formulas: docs/methods.md#batchnorm-folding.
"""

import keras
import numpy as np

from kqrobust import model_graph
from kqrobust.layers import registry


def _graph_models(model):
    yield model
    for layer in model.layers:
        if isinstance(layer, keras.Model) and model_graph.is_graph_model(layer):
            yield from _graph_models(layer)


def foldable_batchnorms(model):
    """Maps each foldable BatchNormalization name to its linear layer's name.

    A BN folds when its only input is a layer of a registered type with a
    linear activation whose output feeds only that BN and is not a model
    output.
    """
    pairs = {}
    for sub in _graph_models(model):
        feeds = model_graph.inbound_layers(sub)
        uses = {}
        for sources in feeds.values():
            for name in sources:
                uses[name] = uses.get(name, 0) + 1
        for name in model_graph.output_layer_names(sub):
            uses[name] = uses.get(name, 0) + 1
        by_name = {layer.name: layer for layer in sub.layers}
        for layer in sub.layers:
            if not isinstance(layer, keras.layers.BatchNormalization):
                continue
            sources = feeds.get(layer.name, [])
            if len(sources) != 1 or sources[0] not in by_name:
                continue
            source = by_name[sources[0]]
            activation = getattr(source, "activation", None)
            if (
                registry.layer_type_of(source) is not None
                and uses.get(source.name) == 1
                and getattr(activation, "__name__", None) == "linear"
            ):
                pairs[layer.name] = source.name
    return pairs


def normalizes_last_axis(bn_layer):
    """Whether a built BatchNormalization normalizes the last (channel) axis,
    the only one that folds into the layer before it."""
    axis = bn_layer.get_config()["axis"]
    last = len(bn_layer.input.shape) - 1
    return axis in (-1, [-1], last, [last])


def batchnorm_scale_shift(bn_layer):
    """Returns `(a, c)` such that `BN(z) = a * z + c` in inference.

    Args:
        bn_layer: a built `keras.layers.BatchNormalization` over the last
            axis.

    Returns:
        Two float64 arrays of shape `(channels,)`.
    """
    config = bn_layer.get_config()
    if not normalizes_last_axis(bn_layer):
        raise ValueError(
            f"Only BatchNormalization over the last (channel) axis can be folded. "
            f"Received: axis={config['axis']} in layer '{bn_layer.name}'"
        )
    variance = np.asarray(bn_layer.moving_variance, np.float64)
    mean = np.asarray(bn_layer.moving_mean, np.float64)
    gamma = (
        np.asarray(bn_layer.gamma, np.float64) if bn_layer.gamma is not None else np.ones_like(mean)
    )
    beta = (
        np.asarray(bn_layer.beta, np.float64) if bn_layer.beta is not None else np.zeros_like(mean)
    )
    scale = gamma / np.sqrt(variance + config["epsilon"])
    return scale, beta - scale * mean


def fold_batchnorm(kernel, bias, scale, shift, channel_axes=-1):
    """Folds `z -> scale * z + shift` into a linear layer's kernel and bias.

    Args:
        kernel: the layer's kernel, its output channels on `channel_axes`
            (Conv2D `(kh, kw, in, out)` and Dense `(in, out)`: -1; depthwise
            `(kh, kw, in, multiplier)`: (-2, -1), channel `in * m + j`;
            Conv2DTranspose `(kh, kw, out, in)`: -2).
        bias: the layer's bias, or None for a layer without bias.
        scale: per-output-channel multiplier `a` (`(out,)`).
        shift: per-output-channel shift `c` (`(out,)`).
        channel_axes: the kernel's output-channel axes
            (`kq.layers.registry.kernel_output_axes`).

    Returns:
        `(kernel', bias')` as float32 arrays.

    Example:
        >>> kernel = np.ones((3, 3, 1, 2), "float32")
        >>> k, b = fold_batchnorm(kernel, None, scale=[2.0, -1.0], shift=[0.5, 0.0])
        >>> k[0, 0, 0], b
        (array([ 2., -1.], dtype=float32), array([0.5, 0. ], dtype=float32))

    `batchnorm_scale_shift(bn)` gives `scale, shift` of a BatchNormalization
    layer.
    """
    kernel = np.asarray(kernel, np.float64)
    scale = np.asarray(scale, np.float64)
    shape = registry.channel_shape(kernel.shape, channel_axes)
    if scale.size != int(np.prod(shape)):
        raise ValueError(
            f"BatchNormalization has {scale.size} channels but the kernel of shape "
            f"{kernel.shape} has {int(np.prod(shape))} output channels."
        )
    bias = np.zeros(scale.shape) if bias is None else np.asarray(bias, np.float64)
    broadcast = registry.channel_broadcast_shape(kernel.shape, channel_axes)
    new_kernel = kernel * scale.reshape(broadcast)
    new_bias = scale * bias.reshape(scale.shape) + np.asarray(shift, np.float64)
    return new_kernel.astype(np.float32), new_bias.astype(np.float32)


def fold_step(step, scale):
    """The per-channel weight step after folding: `|a_c| * s_c`.

    Args:
        step: the kernel quantizer's per-channel step (the shape of the
            kernel's channel axes: `(out,)`, or `(in, multiplier)` for
            depthwise kernels), or one step per tensor (size 1).
        scale: the BN multiplier `a` (`(out,)`), or None (no BN).

    Returns:
        A float64 array with the shape of `step`; for a per-tensor step and
        a BN, the `(out,)` steps `|a_c| * s` (the folded grid is per
        channel).
    """
    step = np.asarray(step, np.float64)
    if scale is None:
        return step
    scale = np.abs(np.asarray(scale, np.float64))
    if step.size == 1:
        return step.reshape(()) * scale
    return step * scale.reshape(step.shape)
