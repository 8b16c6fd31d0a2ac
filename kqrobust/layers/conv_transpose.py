"""Conv2DTranspose: the quantized and export classes and the registry entry.

The kernel of `keras.layers.Conv2DTranspose` is `(kh, kw, out, in)`: its
output channels are axis -2, not the trailing axis that kqrobust's
quantizers give one step each (`kq.quantizers.LSQ`'s `channel_axis` names
trailing axes, so that a step broadcasts against the kernel). The kernel
therefore has one weight step per tensor, and its output channels are
registered separately (`output_channel_axes=-2`) for what must follow the
output channels: BatchNorm folding, SymReg, the probes' folded view.

In TFLite the layer is a `TRANSPOSE_CONV` op with weights `(out, kh, kw,
in)`, int8 per output channel (quantized dimension 0). The converter turns
a per-tensor FakeQuant on the kernel into per-tensor weights, but a
BatchNorm folded into the layer scales each output channel by `|a_c|`, so
the folded grid has one scale per output channel, which a FakeQuant on
axis -2 cannot carry (a per-channel FakeQuant between transposes fails to
convert: "'tfl.transpose' op has mismatched quantized axes"). The export
class stores the kernel already on its grid and `kq.export.to_tflite`
writes the int8 grid into the op after conversion (`TfliteWeights`): the
int8 weights are exactly `k` times the QAT codes, per output channel.

References:
    Dumoulin and Visin, "A guide to convolution arithmetic for deep
    learning", arXiv:1603.07285 (transposed convolution, output padding).
    TensorFlow Lite 8-bit quantization specification (TRANSPOSE_CONV:
    per-axis int8 weights on dimension 0, int32 bias of scale
    `input_scale * weight_scale`).
"""

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import registry
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.export_base import ExportMixin

TRANSPOSE_CONV = 67  # tflite::BuiltinOperator


@kqrobust_export
class QuantConv2DTranspose(QuantizeMixin, keras.layers.Conv2DTranspose):
    """`keras.layers.Conv2DTranspose` with quantized input and weights.

    The kernel `(kh, kw, out, in)` has one weight step for the whole tensor
    (`channel_axis=None`): the output channels are not its trailing axis.
    Arguments: those of `QuantizeMixin` (quantizers and hooks) and of
    `keras.layers.Conv2DTranspose`.

    Example:
        >>> layer = kq.layers.QuantConv2DTranspose(
        ...     8, 3, strides=2, padding="same",
        ...     kernel_quantizer=kq.quantizers.LSQ(bits=4),
        ...     input_quantizer=kq.quantizers.LSQ(bits=8, signed=False))
    """


@kqrobust_export
class ExportConv2DTranspose(ExportMixin, keras.layers.Conv2DTranspose):
    """Conv2DTranspose with an 8-bit input FakeQuant; the kernel is stored
    already quantized and its grid written into the converted `.tflite`
    (per output channel, the scales of a folded BatchNorm included)."""


def transposed_convolution(layer, x, kernel):
    """Keras' transposed convolution of the layer (what its `call` computes)."""
    return ops.conv_transpose(
        x,
        kernel,
        strides=list(layer.strides),
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
        data_format=layer.data_format,
    )


registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.Conv2DTranspose,
        quant_class=QuantConv2DTranspose,
        export_class=ExportConv2DTranspose,
        kind="conv",
        linear_op=transposed_convolution,
        channel_axes=lambda layer: None,
        output_channel_axes=lambda layer: -2,
        # The converter keeps a separate RELU after TRANSPOSE_CONV (measured, TF 2.21).
        fuses_relu=False,
        # TFLite's TRANSPOSE_CONV: inputs (output_shape, weights, input, bias),
        # weights (out, kh, kw, in).
        tflite_weights=registry.TfliteWeights(
            TRANSPOSE_CONV, lambda k: k.transpose(2, 0, 1, 3), axis=0, input_index=2, bias_index=3
        ),
    )
)
