"""The parameters QGen's measures perturb, with BatchNorm folded virtually.

QGen (AskariHemmat et al., arXiv:2404.11769, 2024) folds BatchNorm before
perturbing (docs/methods.md#generalization-measures). Folding a layer
`y = BN(op(x, W) + b)` gives `W_f = c * W` and `b_f = c * (b - mean) + beta`
with `c = gamma / sqrt(var + eps)` per output channel. Rather than rebuild
the graph, noise `u` meant for the folded parameters is applied to the
model's own variables: `W += u_W / c` and `beta += u_b` (or `mean -= u_b / c`
when the BatchNorm has no `beta`). The perturbed model computes exactly what
the perturbed folded model would, and the magnitudes the measures use are
those of `W_f` and `b_f`.

Perturbed: the kernel (and the bias, folded or not) of every trainable
layer with a kernel, quantized or not. For quantized and
robustified layers this is the latent kernel `W`, before SatNL and the
weight quantizer. Other variables (unfolded BatchNorm, LSQ steps) are not
perturbed.
"""

import dataclasses

import keras
import numpy as np

from kqrobust import model_graph
from kqrobust.export import fold
from kqrobust.layers import registry


@dataclasses.dataclass
class Target:
    """One perturbed variable.

    Attributes:
        variable: the model variable that carries the noise.
        scale: noise on the folded parameter `u` moves the variable by
            `u / scale` (1 without folding).
        folded: the folded parameter's value (its magnitudes).
    """

    variable: keras.Variable
    scale: np.ndarray
    folded: np.ndarray


def _is_linear(layer):
    activation = getattr(layer, "activation", None)
    return activation is None or activation is keras.activations.linear


def _following_batchnorm(model):
    """Maps a layer name to the BatchNorm folded into it: the export's rule
    (`kq.export.fold.foldable_batchnorms`), over the channel axis."""
    if not model_graph.is_graph_model(model):
        return {}
    layers = {layer.name: layer for layer in model_graph.flat_layers(model)}
    return {
        linear: layers[bn]
        for bn, linear in fold.foldable_batchnorms(model).items()
        if fold.normalizes_last_axis(layers[bn])
    }


def _channel_scale(layer, kernel, c):
    axes = registry.kernel_output_axes(layer)
    return (
        c if axes is None else np.reshape(c, registry.channel_broadcast_shape(kernel.shape, axes))
    )


def perturbation_targets(model, fold_batchnorm=True):
    """The variables to perturb and how, as a list of `Target`.

    Args:
        model: a built Keras model (float, quantized or robustified).
        fold_batchnorm: fold each BatchNorm into the layer it follows (when
            that layer's output feeds only the BatchNorm and has no
            activation of its own).

    Returns:
        A list of `Target`, kernels and biases in layer order.
    """
    followers = _following_batchnorm(model) if fold_batchnorm else {}
    targets = []
    for layer in model_graph.flat_layers(model):
        kernel = getattr(layer, "kernel", None)
        if not isinstance(kernel, keras.Variable) or not kernel.trainable:
            continue
        w = np.asarray(kernel.numpy(), "float64")
        bias = layer.bias if getattr(layer, "use_bias", False) else None
        axes = registry.kernel_output_axes(layer)
        channels = (
            w.shape[-1] if axes is None else int(np.prod(registry.channel_shape(w.shape, axes)))
        )
        b = np.zeros(channels) if bias is None else np.asarray(bias.numpy(), "float64")
        bn = followers.get(layer.name) if _is_linear(layer) else None
        if bn is None:
            targets.append(Target(kernel, np.ones(w.shape), w))
            if bias is not None:
                targets.append(Target(bias, np.ones(b.shape), b))
            continue
        c, _ = fold.batchnorm_scale_shift(bn)
        c = np.where(np.abs(c) < 1e-12, 1e-12, c)
        mean = np.asarray(bn.moving_mean.numpy(), "float64")
        beta = np.asarray(bn.beta.numpy(), "float64") if bn.center else 0.0
        scale = _channel_scale(layer, w, c)
        targets.append(Target(kernel, np.broadcast_to(scale, w.shape).copy(), w * scale))
        folded_bias = c * (b - mean) + beta
        if bn.center:
            targets.append(Target(bn.beta, np.ones(folded_bias.shape), folded_bias))
        else:
            targets.append(Target(bn.moving_mean, -c, folded_bias))
    if not targets:
        raise ValueError(
            f"Model '{model.name}' has no trainable Conv2D, DepthwiseConv2D or "
            "Dense kernel to perturb. Received: a model with "
            f"{len(model.trainable_weights)} trainable weights."
        )
    return targets


def apply_noise(targets, originals, noise):
    """Sets each target to `original + noise / scale` (noise in folded space)."""
    for target, original, u in zip(targets, originals, noise):
        target.variable.assign((original + u / target.scale).astype(original.dtype))


def originals_of(targets):
    """The targets' current values, to perturb from."""
    return [np.array(t.variable.numpy()) for t in targets]
