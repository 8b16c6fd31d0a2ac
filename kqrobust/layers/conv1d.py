"""Conv1D and DepthwiseConv1D: the quantized and export classes and the registry entries.

TFLite has no 1-D convolution: the converter lowers `Conv1D` to `CONV_2D`
and `DepthwiseConv1D` to `DEPTHWISE_CONV_2D` on a height-1 image (TF's
`conv1d` expands the input to `(batch, 1, steps, channels)` and the kernel to
`(1, k, in, out)`). A per-channel FakeQuant on the 3-D kernel does not
convert: the expansion becomes a `tfl.reshape` that moves the quantized axis
from 2 to 3, which the converter rejects (TF 2.21). So both kernels are stored
already quantized and their int8 grids written after conversion
(`kq.export.tflite_weights`): CONV_2D's `(out, 1, k, in)` layout, quantized
on axis 0, and DEPTHWISE_CONV_2D's `(1, 1, k, in * multiplier)`, on axis 3.

References:
    TensorFlow Lite 8-bit quantization specification (per-axis int8
    weights on the output-channel dimension).
    van den Oord et al., "WaveNet: A Generative Model for Raw Audio", 2016
    (causal, dilated 1-D convolutions: left padding of `dilation * (k - 1)`).
"""

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import registry
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.depthwise import depthwise_convolution
from kqrobust.layers.export_base import ExportMixin

CONV_2D = 3  # tflite::BuiltinOperator
DEPTHWISE_CONV_2D = 4


@kqrobust_export
class QuantConv1D(QuantizeMixin, keras.layers.Conv1D):
    """`keras.layers.Conv1D` with quantized input and per-output-channel weights.

    Causal padding and dilation as in Keras. Arguments: those of
    `QuantizeMixin` (quantizers and hooks) and of `keras.layers.Conv1D`.

    Example:
        >>> layer = kq.layers.QuantConv1D(
        ...     16, 3, padding="causal",
        ...     kernel_quantizer=kq.quantizers.LSQ(bits=4, channel_axis=-1),
        ...     input_quantizer=kq.quantizers.LSQ(bits=8))
    """


@kqrobust_export
class ExportConv1D(ExportMixin, keras.layers.Conv1D):
    """Conv1D with an 8-bit input FakeQuant; the kernel is stored already
    quantized and its grid written into the converted `.tflite`."""


@kqrobust_export
class QuantDepthwiseConv1D(QuantizeMixin, keras.layers.DepthwiseConv1D):
    """`keras.layers.DepthwiseConv1D` with quantized input and weights.

    The kernel `(k, in, multiplier)` gets one step per `(in, multiplier)`
    pair, i.e. per output channel. Arguments as `QuantConv1D`.
    """


@kqrobust_export
class ExportDepthwiseConv1D(ExportMixin, keras.layers.DepthwiseConv1D):
    """DepthwiseConv1D with an 8-bit input FakeQuant; the kernel is stored
    already quantized and its grid written into the converted `.tflite`."""


def causal_padding(layer):
    """The `ops.pad` widths of a causal 1-D convolution: `dilation * (k - 1)`
    steps on the left of the time axis, none on the right."""
    left = layer.dilation_rate[0] * (layer.kernel_size[0] - 1)
    if layer.data_format == "channels_first":
        return [[0, 0], [0, 0], [left, 0]]
    return [[0, 0], [left, 0], [0, 0]]


def convolution_1d(layer, x, kernel):
    """Keras' Conv1D without bias and activation, causal padding included."""
    padding = layer.padding
    if padding == "causal":
        x = ops.pad(x, causal_padding(layer))
        padding = "valid"
    return ops.conv(
        x,
        kernel,
        strides=list(layer.strides),
        padding=padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.Conv1D,
        quant_class=QuantConv1D,
        export_class=ExportConv1D,
        kind="conv",
        linear_op=convolution_1d,
        channel_axes=lambda layer: -1,
        # The converter's CONV_2D weights for a (k, in, out) kernel: (out, 1, k, in).
        tflite_weights=registry.TfliteWeights(
            CONV_2D, lambda k: k.transpose(2, 0, 1)[:, None], axis=0
        ),
    )
)

registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.DepthwiseConv1D,
        quant_class=QuantDepthwiseConv1D,
        export_class=ExportDepthwiseConv1D,
        kind="depthwise",
        linear_op=depthwise_convolution,
        channel_axes=lambda layer: (-2, -1),
        # The converter's depthwise weights for a (k, in, m) kernel: (1, 1, k, in * m).
        tflite_weights=registry.TfliteWeights(
            DEPTHWISE_CONV_2D, lambda k: k.reshape((1, 1, k.shape[0], -1)), axis=3
        ),
    )
)
