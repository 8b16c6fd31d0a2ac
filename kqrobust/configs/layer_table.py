"""Declarative tables of the float layers: which keep weights, which keep the sign.

The layer types kqrobust quantizes are registered in `kq.layers.registry`;
these tables say how every other layer is treated when a model is quantized.
"""

import keras

from kqrobust.layers import registry
from kqrobust.layers.quant_identity import QuantIdentity

# Float layers whose own weights stay float by design (BN is folded at export).
FLOAT_LAYERS_WITH_WEIGHTS = (
    keras.layers.BatchNormalization,
    keras.layers.LayerNormalization,
    keras.layers.GroupNormalization,
    keras.layers.Normalization,
    keras.layers.PReLU,
)

# Layers whose output is >= 0 when every input is >= 0.
SIGN_PRESERVING_LAYERS = (
    keras.layers.MaxPooling1D,
    keras.layers.AveragePooling1D,
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.ZeroPadding1D,
    keras.layers.Cropping1D,
    keras.layers.UpSampling1D,
    keras.layers.SpatialDropout1D,
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
    QuantIdentity,
)


def is_unsupported_weighted(layer):
    """True for a layer with weights that kqrobust cannot quantize."""
    if registry.layer_type_of(layer) is not None or isinstance(layer, keras.Model):
        return False
    if isinstance(layer, FLOAT_LAYERS_WITH_WEIGHTS):
        return False
    if hasattr(
        layer, "tensor_quantizers"
    ):  # Weights are its quantizers' (QuantDotProductAttention, QuantIdentity)
        return False
    return bool(layer.weights)


def output_is_nonnegative(layer, inputs_nonnegative):
    """Whether `layer`'s output is >= 0, given whether all its inputs are."""
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return not config.get("negative_slope") and (config.get("threshold") or 0) >= 0
    layer_type = registry.layer_type_of(layer)
    if layer_type is not None:
        return layer_type.output_nonnegative(layer)
    if registry.activation_nonnegative(layer):
        return True
    if isinstance(layer, SIGN_PRESERVING_LAYERS):
        return inputs_nonnegative
    return False
