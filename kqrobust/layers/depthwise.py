"""DepthwiseConv2D: the quantized and export classes and the registry entry."""

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import registry
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.export_base import ExportMixin

DEPTHWISE_CONV_2D = 4  # tflite::BuiltinOperator


@kqrobust_export
class QuantDepthwiseConv2D(QuantizeMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with quantized input and weights.

    The kernel `(kh, kw, in, multiplier)` gets one step per `(in,
    multiplier)` pair, i.e. per output channel. Arguments as `QuantConv2D`.
    """


@kqrobust_export
class ExportDepthwiseConv2D(ExportMixin, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D with an 8-bit input FakeQuant; the kernel is stored
    already quantized and its grid written into the converted `.tflite`."""


def depthwise_convolution(layer, x, kernel):
    return ops.depthwise_conv(
        x,
        kernel,
        strides=layer.strides,
        padding=layer.padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.DepthwiseConv2D,
        quant_class=QuantDepthwiseConv2D,
        export_class=ExportDepthwiseConv2D,
        kind="depthwise",
        linear_op=depthwise_convolution,
        channel_axes=lambda layer: (-2, -1),
        # TFLite's depthwise weights are (1, kh, kw, in * multiplier).
        tflite_weights=registry.TfliteWeights(
            DEPTHWISE_CONV_2D, lambda k: k.reshape((1,) + k.shape[:2] + (-1,)), axis=3
        ),
    )
)
