"""Quantized Conv2D, DepthwiseConv2D and Dense.

Subclasses of the Keras layers, so every Keras argument, weight name and
`get_config` key is unchanged; each adds the quantizers and hooks of
`QuantizeMixin`.
"""

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export
from kqrobust.layers.base import QuantizeMixin

_HOOKS = ("kernel_quantizer", "input_quantizer", "weight_transform",
          "input_perturbation", "kernel_losses")


def _split_hooks(kwargs):
    return {name: kwargs.pop(name, None) for name in _HOOKS}


@kqrobust_export
class QuantConv2D(QuantizeMixin, keras.layers.Conv2D):
    """`keras.layers.Conv2D` with quantized input and per-output-channel weights.

    Args:
        kernel_quantizer: quantizer of the kernel (one step per output
            channel), a name, dict or instance, or None for float weights.
        input_quantizer: quantizer of the layer input, or None.
        weight_transform: callable applied to the kernel before quantization
            (SatNL), or None.
        input_perturbation: callable `(x, input_step) -> x` applied to the
            quantized input in training (SFP), or None.
        kernel_losses: callables of the transformed kernel whose values are
            added to the model losses in training (SymReg, KURE).
        **kwargs: the arguments of `keras.layers.Conv2D`.
    """

    kernel_channel_axis = -1

    def __init__(self, *args, **kwargs):
        hooks = _split_hooks(kwargs)
        super().__init__(*args, **kwargs)
        self._init_quantization(**hooks)

    def linear_op(self, x, kernel):
        return self.convolution_op(x, kernel)


@kqrobust_export
class QuantDepthwiseConv2D(QuantizeMixin, keras.layers.DepthwiseConv2D):
    """`keras.layers.DepthwiseConv2D` with quantized input and weights.

    The kernel `(kh, kw, in, multiplier)` gets one step per `(in,
    multiplier)` pair, i.e. per output channel (per input channel when the
    multiplier is 1). Arguments as `QuantConv2D`.
    """

    kernel_channel_axis = (-2, -1)

    def __init__(self, *args, **kwargs):
        hooks = _split_hooks(kwargs)
        super().__init__(*args, **kwargs)
        self._init_quantization(**hooks)

    def linear_op(self, x, kernel):
        return ops.depthwise_conv(
            x, kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)


@kqrobust_export
class QuantDense(QuantizeMixin, keras.layers.Dense):
    """`keras.layers.Dense` with quantized input and per-unit weights.

    Arguments as `QuantConv2D`, plus those of `keras.layers.Dense`.
    """

    kernel_channel_axis = -1

    def __init__(self, *args, **kwargs):
        hooks = _split_hooks(kwargs)
        super().__init__(*args, **kwargs)
        self._init_quantization(**hooks)

    def linear_op(self, x, kernel):
        return ops.matmul(x, kernel)
