"""Dense: the quantized and export classes and the registry entry."""

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import registry
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.export_base import ExportMixin

FULLY_CONNECTED = 9  # tflite::BuiltinOperator


@kqrobust_export
class QuantDense(QuantizeMixin, keras.layers.Dense):
    """`keras.layers.Dense` with quantized input and per-unit weights.

    Arguments as `QuantConv2D`, plus those of `keras.layers.Dense`.
    """


@kqrobust_export
class ExportDense(ExportMixin, keras.layers.Dense):
    """Dense with an 8-bit input FakeQuant; the kernel is stored already
    quantized and its grid written into the converted `.tflite`."""


def matmul(layer, x, kernel):
    del layer
    return ops.matmul(x, kernel)


registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.Dense,
        quant_class=QuantDense,
        export_class=ExportDense,
        kind="dense",
        linear_op=matmul,
        channel_axes=lambda layer: -1,
        # TFLite's fully-connected weights are (out, in).
        tflite_weights=registry.TfliteWeights(FULLY_CONNECTED, lambda k: k.T, axis=0),
    )
)
