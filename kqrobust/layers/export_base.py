"""What every export-graph layer shares: the 8-bit FakeQuant ops of its input and kernel.

The TFLite converter and tf2onnx recognise TF's `FakeQuantWithMinMaxArgs`
and `FakeQuantWithMinMaxVarsPerChannel` ops and turn them into integer
kernels (TFLite) or QuantizeLinear/DequantizeLinear pairs (ONNX). An export
layer holds the already folded kernel (BatchNorm and weight transforms folded
in, weights on their quantization grid) and puts:

- one per-tensor 8-bit FakeQuant on its input, with the learned range of the
  quantized layer's input quantizer (`input_range`);
- the per-channel 8-bit narrow-range kernel range `[-127*t, 127*t]`
  (`kernel_range`, `t = s/k`, see `kq.export.ranges`). Layer types whose
  registered `kernel_fake_quant` is True apply it as a per-channel FakeQuant
  on the kernel (the converter accepts it for CONV_2D); the others store the
  kernel already quantized and keep `kernel_range` in their config, and
  `kq.export.to_tflite` writes the grid into the converted model with the
  type's `tflite_weights` layout.

Export needs the TensorFlow backend.
"""

from kqrobust.layers import registry
from kqrobust.layers.base import finish


class ExportMixin:
    """Mixed into the export subclass of each registered Keras layer type.

    Args:
        input_range: `(min, max)` of the per-tensor 8-bit input FakeQuant, or
            None (the range comes from the tensor's own FakeQuant).
        kernel_range: `(mins, maxs)`, one pair per output channel, of the
            8-bit narrow-range kernel FakeQuant, or None.
        **kwargs: the arguments of the Keras layer class.
    """

    def __init__(self, *args, input_range=None, kernel_range=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_range = None if input_range is None else [float(v) for v in input_range]
        self.kernel_range = (
            None
            if kernel_range is None
            else [[float(v) for v in kernel_range[0]], [float(v) for v in kernel_range[1]]]
        )

    def call(self, inputs, training=None):
        import tensorflow as tf

        del training  # The export graph is an inference graph.
        layer_type = registry.layer_type_of(self)
        x = inputs
        if self.input_range is not None:
            x = tf.quantization.fake_quant_with_min_max_args(
                x, min=self.input_range[0], max=self.input_range[1], num_bits=8, narrow_range=False
            )
        kernel = self.kernel
        if self.kernel_range is not None and layer_type.kernel_fake_quant:
            kernel = tf.quantization.fake_quant_with_min_max_vars_per_channel(
                kernel,
                tf.constant(self.kernel_range[0], tf.float32),
                tf.constant(self.kernel_range[1], tf.float32),
                num_bits=8,
                narrow_range=True,
            )
        return finish(self, layer_type.linear_op(self, x, kernel))

    def get_config(self):
        config = super().get_config()
        config.update({"input_range": self.input_range, "kernel_range": self.kernel_range})
        return config
