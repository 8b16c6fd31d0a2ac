"""The layers of an export graph: float linear layers with TF FakeQuant ops.

The TFLite converter and tf2onnx recognise TF's `FakeQuantWithMinMaxArgs`
and `FakeQuantWithMinMaxVarsPerChannel` ops and turn them into integer
kernels (TFLite) or QuantizeLinear/DequantizeLinear pairs (ONNX). These
layers hold the already folded kernel (BatchNorm and weight transforms
folded in, weights on their quantization grid) and put:

- one per-tensor 8-bit FakeQuant on the layer input, with the learned range
  of the layer's input quantizer (`input_range`);
- the per-channel 8-bit narrow-range kernel range `[-127*s, 127*s]`
  (`kernel_range`, scale = the weight step `s`). Conv2D applies it as a
  per-channel FakeQuant on the kernel. Per-channel FakeQuant does not convert
  for Dense and DepthwiseConv2D ("mismatched quantized axes"): those store
  the kernel already quantized and keep `kernel_range` in their config;
  `kq.export.to_tflite` writes it into the converted model
  (`tflite_weights.py`), so their int8 weights are the codes too.

Export needs the TensorFlow backend.
"""

import keras
import tensorflow as tf
from keras import ops

from kqrobust.api_export import kqrobust_export


class _FakeQuantLinear:
    """Shared call of the export layers; subclasses set `linear_op`.

    `fake_quant_kernel`: whether `call` applies `kernel_range` as a FakeQuant
    (Conv2D) or only keeps it for the converted model (Dense, depthwise).
    """

    fake_quant_kernel = False

    def _init_ranges(self, input_range, kernel_range):
        self.input_range = None if input_range is None else [float(v) for v in input_range]
        self.kernel_range = (
            None if kernel_range is None
            else [[float(v) for v in kernel_range[0]], [float(v) for v in kernel_range[1]]])

    def call(self, inputs, training=None):
        del training  # The export graph is an inference graph.
        x = inputs
        if self.input_range is not None:
            x = tf.quantization.fake_quant_with_min_max_args(
                x, min=self.input_range[0], max=self.input_range[1], num_bits=8,
                narrow_range=False)
        kernel = self.kernel
        if self.kernel_range is not None and self.fake_quant_kernel:
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel, tf.constant(self.kernel_range[0], tf.float32),
                tf.constant(self.kernel_range[1], tf.float32), num_bits=8,
                narrow_range=True)
        outputs = self.linear_op(x, kernel)
        if self.use_bias:
            outputs = outputs + self.bias
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self):
        config = super().get_config()
        config.update({"input_range": self.input_range, "kernel_range": self.kernel_range})
        return config


@kqrobust_export
class ExportConv2D(_FakeQuantLinear, keras.layers.Conv2D):
    """Conv2D with an 8-bit input FakeQuant and a per-channel kernel FakeQuant.

    Args:
        input_range: `(min, max)` of the per-tensor 8-bit input FakeQuant, or
            None (the converter calibrates the input range).
        kernel_range: `(mins, maxs)`, one pair per output channel, of the
            8-bit narrow-range kernel FakeQuant, or None.
        **kwargs: the arguments of `keras.layers.Conv2D`.
    """

    fake_quant_kernel = True

    def __init__(self, *args, input_range=None, kernel_range=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ranges(input_range, kernel_range)

    def linear_op(self, x, kernel):
        return self.convolution_op(x, kernel)


@kqrobust_export
class ExportDepthwiseConv2D(_FakeQuantLinear, keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D with an 8-bit input FakeQuant; the kernel is stored
    already quantized. Arguments as `ExportConv2D`; `kernel_range` (one pair
    per channel `in * multiplier + j`) is not applied in the graph but written
    into the converted `.tflite`."""

    def __init__(self, *args, input_range=None, kernel_range=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ranges(input_range, kernel_range)

    def linear_op(self, x, kernel):
        return ops.depthwise_conv(
            x, kernel, strides=self.strides, padding=self.padding,
            dilation_rate=self.dilation_rate, data_format=self.data_format)


@kqrobust_export
class ExportDense(_FakeQuantLinear, keras.layers.Dense):
    """Dense with an 8-bit input FakeQuant; the kernel is stored already
    quantized. Arguments as `ExportConv2D`; `kernel_range` is not applied in
    the graph but written into the converted `.tflite`."""

    def __init__(self, *args, input_range=None, kernel_range=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ranges(input_range, kernel_range)

    def linear_op(self, x, kernel):
        return ops.matmul(x, kernel)


@kqrobust_export
class FoldedBatchNorm(keras.layers.Layer):
    """Stands in for a BatchNormalization folded into the layer before it.

    Returns its input (it accepts BatchNormalization's call arguments, so it
    replaces the BN in a cloned graph).
    """

    def call(self, inputs, training=None, mask=None):
        del training, mask
        return inputs


@kqrobust_export
class FakeQuant(keras.layers.Layer):
    """An 8-bit per-tensor TF FakeQuant with a fixed `[min, max]` range.

    Placed on the tensors of the export graph that no quantizer covers, so
    that every tensor carries its range and the converter needs no
    calibration of its own.

    Args:
        min_value: lower end of the range (<= 0).
        max_value: upper end of the range (>= 0, > min_value).
        **kwargs: the arguments of `keras.layers.Layer` (e.g. `name`).
    """

    def __init__(self, min_value, max_value, **kwargs):
        super().__init__(**kwargs)
        self.min_value = float(min_value)
        self.max_value = float(max_value)
        if not self.min_value <= 0.0 <= self.max_value or self.min_value == self.max_value:
            raise ValueError(
                "FakeQuant needs min_value <= 0 <= max_value and min_value < max_value. "
                f"Received: min_value={min_value}, max_value={max_value}")

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_args(
            inputs, min=self.min_value, max=self.max_value, num_bits=8, narrow_range=False)

    def get_config(self):
        config = super().get_config()
        config.update({"min_value": self.min_value, "max_value": self.max_value})
        return config
