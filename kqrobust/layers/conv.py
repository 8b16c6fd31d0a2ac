"""Conv2D: the quantized and export classes and the registry entry."""

import keras

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import registry
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.export_base import ExportMixin


@kqrobust_export
class QuantConv2D(QuantizeMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with quantized input and per-output-channel weights.

    Arguments: those of `QuantizeMixin` (quantizers and hooks) and of
    `keras.layers.Conv2D`.

    Example:
        >>> layer = kq.layers.QuantConv2D(
        ...     16, 3, kernel_quantizer=kq.quantizers.LSQ(bits=4, channel_axis=-1),
        ...     input_quantizer=kq.quantizers.LSQ(bits=4, signed=False))
    """


@kqrobust_export
class ExportConv2D(ExportMixin, keras.layers.Conv2D):
    """Conv2D with an 8-bit input FakeQuant and a per-channel kernel FakeQuant."""


def convolution(layer, x, kernel):
    """Keras' convolution of the layer (`BaseConv.convolution_op`)."""
    return layer.convolution_op(x, kernel)


registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.Conv2D,
        quant_class=QuantConv2D,
        export_class=ExportConv2D,
        kind="conv",
        linear_op=convolution,
        channel_axes=lambda layer: -1,
        kernel_fake_quant=True,
    )
)
