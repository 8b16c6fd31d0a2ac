"""Declarative tables: which Keras layers are quantized, which pass through.

Adding a layer type is one row (tfmot's `_QuantizeInfo` table, Keras' mode
registry), never an if/elif chain.
"""

import dataclasses

import keras

from kqrobust.layers import QuantConv2D
from kqrobust.layers import QuantDense
from kqrobust.layers import QuantDepthwiseConv2D


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """How one float layer type is quantized."""

    quant_class: type
    weight_attrs: tuple = ("kernel",)
    is_depthwise: bool = False


QUANTIZABLE_LAYERS = {
    keras.layers.Conv2D: LayerSpec(QuantConv2D),
    keras.layers.DepthwiseConv2D: LayerSpec(QuantDepthwiseConv2D, is_depthwise=True),
    keras.layers.Dense: LayerSpec(QuantDense),
}

# Float layers whose own weights stay float by design (BN is folded at export).
FLOAT_LAYERS_WITH_WEIGHTS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Normalization,
    keras.layers.PReLU,
)

# Layers whose output is >= 0 whatever their input.
NONNEGATIVE_ACTIVATIONS = frozenset(
    {"relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "exponential", "softplus"}
)

# Layers whose output is >= 0 when every input is >= 0.
SIGN_PRESERVING_LAYERS = (
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling2D,
    keras.layers.Identity,
    keras.layers.Permute,
    keras.layers.Add,
    keras.layers.Concatenate,
    keras.layers.Maximum,
    keras.layers.Multiply,
    keras.layers.Average,
)


def spec_for(layer):
    """The `LayerSpec` of `layer`'s exact type, or None."""
    return QUANTIZABLE_LAYERS.get(type(layer))


def is_unsupported_weighted(layer):
    """True for a layer with weights that kqrobust cannot quantize."""
    if spec_for(layer) is not None or isinstance(layer, keras.Model):
        return False
    if isinstance(layer, FLOAT_LAYERS_WITH_WEIGHTS):
        return False
    return bool(layer.weights)


def output_is_nonnegative(layer, inputs_nonnegative):
    """Whether `layer`'s output is >= 0, given whether all its inputs are."""
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return not config.get("negative_slope") and (config.get("threshold") or 0) >= 0
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    if name in NONNEGATIVE_ACTIVATIONS:
        return True
    if isinstance(layer, SIGN_PRESERVING_LAYERS):
        return inputs_nonnegative
    return False
