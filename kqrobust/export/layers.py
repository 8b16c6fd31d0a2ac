"""Export-graph layers that are not a registered layer type: FakeQuant, FoldedBatchNorm.

The export classes of the registered layer types (`ExportConv2D`,
`ExportDense`, ...) live beside their quantized classes in `kq.layers` and
are re-exported here.

Export needs the TensorFlow backend.
"""

import keras
import tensorflow as tf

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import ExportConv2D  # noqa: F401 (re-exported)
from kqrobust.layers import ExportDense  # noqa: F401
from kqrobust.layers import ExportDepthwiseConv2D  # noqa: F401


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
                f"Received: min_value={min_value}, max_value={max_value}"
            )

    def call(self, inputs):
        return tf.quantization.fake_quant_with_min_max_args(
            inputs, min=self.min_value, max=self.max_value, num_bits=8, narrow_range=False
        )

    def compute_output_spec(self, inputs):
        # Dense, whatever Keras infers: `x * 0.5` on a Keras tensor is marked
        # sparse (Multiply's spec defaults a scalar's sparsity to True), but
        # every tensor of the export graph is dense.
        return keras.KerasTensor(inputs.shape, dtype=inputs.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"min_value": self.min_value, "max_value": self.max_value})
        return config
