"""Float layers rewritten into Keras-tensor operations that TFLite keeps integer.

Some float layers compute with ops that the converter cannot quantize, or
hide intermediate tensors that then carry no FakeQuant range:

- `LayerNormalization` negates its mean (TFLite's NEG has no int8 kernel)
  and, written with `square`, needs SQUARE (no int8 kernel either);
- `Normalization` divides by a per-channel constant (DIV has no int8
  kernel); the converter keeps the input and the division in float;
- `Rescaling` hides its product before the offset.

- a layer of a registered type (Conv2D, Dense, ...) with an activation
  TFLite does not fuse into it (sigmoid, softmax, GELU, swish, ...) hides
  its pre-activation tensor, which then has no range: the layer is split into
  the same layer with a linear activation and an `Activation` layer
  (`<name>_activation`);
- swish (`x * sigmoid(x)`, EfficientNet's activation) hides its sigmoid,
  whose int8 output TFLite fixes at scale 1/256.

Before planning the export graph, each such layer is replaced by the same
math written as operations on Keras tensors or separate layers (`MEAN`,
`SUB`, `MUL`, `RSQRT`, `ADD`, `LOGISTIC`, all int8 kernels in TFLite), so
every intermediate tensor is an operation of the Functional graph and gets
its own FakeQuant like any layer output (`tensors.py`). The rewrite is exact
in float but for the constants of LayerNormalization, Normalization and
Rescaling, which it puts on the int8 grid the converter stores them on.
"""

import keras
import numpy as np

from kqrobust import model_graph
from kqrobust.export import ranges
from kqrobust.layers import registry

# Activations the converter fuses into the op before them.
FUSED_ACTIVATIONS = frozenset({"linear", "relu", "relu6"})

ops = keras.ops


def _numpy(value):
    return np.asarray(keras.ops.convert_to_numpy(value), np.float32)


def _broadcast(values, layer_axes, ndim):
    """`values` (the shape of the normalized axes) shaped to broadcast over `ndim` axes."""
    axes = sorted(a % ndim for a in layer_axes)
    shape = [1] * ndim
    for axis, size in zip(axes, np.shape(values)):
        shape[axis] = size
    return np.reshape(values, shape)


def _layer_normalization(layer, x):
    """`(x - mean) * rsqrt(mean((x - mean)^2) + eps) * gamma + beta`, with
    `c * c` for the square (int8 MUL; SQUARE has no int8 kernel), and
    gamma and beta on the converter's int8 constant grid
    (`ranges.on_constant_grid`)."""
    axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    ndim = len(x.shape)
    axes = [a % ndim for a in axes]
    if getattr(layer, "rms_scaling", False):
        y = x * ops.rsqrt(ops.mean(x * x, axis=axes, keepdims=True) + layer.epsilon)
    else:
        centered = x - ops.mean(x, axis=axes, keepdims=True)
        variance = ops.mean(centered * centered, axis=axes, keepdims=True)
        y = centered * ops.rsqrt(variance + layer.epsilon)
    # gamma and beta on the int8 grid the converter stores them on.
    if layer.scale:
        y = y * _broadcast(ranges.on_constant_grid(_numpy(layer.gamma)), axes, ndim)
    if layer.center and not getattr(layer, "rms_scaling", False):
        y = y + _broadcast(ranges.on_constant_grid(_numpy(layer.beta)), axes, ndim)
    return y


def _affine(x, scale, offset):
    """`x * scale + offset` (MUL, ADD), leaving out a unit scale or a zero
    offset (an identity is no op at all), with the constants on the int8 grid
    the converter stores them on (`ranges.on_constant_grid`)."""
    if np.any(scale != 1.0):
        x = x * ranges.on_constant_grid(scale)
    if np.any(offset != 0.0):
        x = x + ranges.on_constant_grid(offset)
    return x


def _normalization(layer, x):
    """`(x - mean) / max(sqrt(var), eps)` as `x * scale + offset` (MUL, ADD),
    or its inverse for `invert=True`."""
    mean = _numpy(layer.mean)
    std = np.maximum(np.sqrt(_numpy(layer.variance)), keras.config.epsilon())
    if layer.invert:
        return _affine(x, std, mean)
    return _affine(x, 1.0 / std, -mean / std)


def _rescaling(layer, x):
    """`x * scale + offset` as two operations, so the product has its range."""
    return _affine(x, np.asarray(layer.scale, np.float32), np.asarray(layer.offset, np.float32))


def _activation_name(layer):
    return getattr(getattr(layer, "activation", None), "__name__", None)


def _split_activation(layer, x):
    """The layer with a linear activation, then its activation as a layer."""
    linear = type(layer).from_config({**layer.get_config(), "activation": "linear"})
    y = linear(x)
    linear.set_weights(layer.get_weights())
    activation = keras.layers.Activation(layer.activation, name=f"{layer.name}_activation")
    return _swish(activation, y) if _activation_name(layer) in ("swish", "silu") else activation(y)


def _swish(layer, x):
    """`x * sigmoid(x)`: the sigmoid gets its own (fixed) int8 range."""
    del layer
    return x * ops.sigmoid(x)


# Keras class -> rewrite(layer, keras_tensor) -> keras_tensor.
REWRITES = (
    (keras.layers.LayerNormalization, _layer_normalization),
    (keras.layers.Normalization, _normalization),
    (keras.layers.Rescaling, _rescaling),
)


def _rewrite_of(layer):
    for keras_class, rewrite in REWRITES:
        if isinstance(layer, keras_class):
            return rewrite
    name = _activation_name(layer)
    if registry.layer_type_of(layer) is not None and name not in FUSED_ACTIVATIONS:
        return _split_activation
    if isinstance(layer, keras.layers.Activation) and name in ("swish", "silu"):
        return _swish
    return None


# The rewrites QAT applies too: they make the activations' tensors and the affine preprocessing's
# visible, and keep every trainable weight a variable (statistics and constants become constants).
QAT_REWRITES = (_split_activation, _swish, _normalization, _rescaling)


def _rule(layer, qat_only):
    rewrite = _rewrite_of(layer)
    return None if qat_only and rewrite not in QAT_REWRITES else rewrite


def needs_rewrite(model, qat_only=False):
    """True if a layer of `model` (one graph level) has a rewrite."""
    return any(_rule(op, qat_only) is not None for op in model_graph.operations(model))


def rewrite_model(model, qat_only=False):
    """Returns `model` with each `REWRITES` layer replaced by its operations.

    The other layers are shared with `model` (same objects, same weights).

    Args:
        model: a flat Functional model (see `flatten.py`) with one input.
        qat_only: apply only `QAT_REWRITES` (split activations out of
            registered layers, swish as `x * sigmoid(x)`, Normalization and
            Rescaling as `x * scale + offset`), which keep every trainable
            weight a variable: `kq.quantize_model` applies them, so that QAT
            sees the tensors the int8 file quantizes and computes with its
            constants.

    Returns:
        A Functional `keras.Model` computing the same function.
    """

    def call_layer(layer, *args, **kwargs):
        rewrite = _rule(layer, qat_only)
        if rewrite is None:
            return layer(*args, **kwargs)
        return rewrite(layer, args[0])

    model_graph.reserve_names(model)
    clone = keras.models.clone_model(
        model, clone_function=lambda layer: layer, call_function=call_layer
    )
    return keras.Model(clone.inputs, clone.outputs, name=model.name)
