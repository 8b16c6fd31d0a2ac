"""`QuantIdentity`: a layer that fake-quantizes the tensor it reads and nothing else.

A full-integer TFLite model stores every tensor in int8, but LSQ's convention
quantizes only the *inputs* of layers with kernels. The tensors no such
input covers (a residual branch before its Add, a ReLU before a global
average pool, the logits) would be trained in float and rounded for the
first time in the int8 file. `kq.quantize_model` puts a `QuantIdentity` on
each of them (`kq.tensor_coverage`), so QAT rounds every tensor the int8 file
rounds, on the grid it learns, and the export takes that grid as the
tensor's range (`export_input_ranges`), as tfmot quantizes the outputs of
Add and of activations.
"""

import keras

from kqrobust import quantizers as quantizers_lib
from kqrobust.api_export import kqrobust_export
from kqrobust.untracked import Untracked


@kqrobust_export
class QuantIdentity(keras.layers.Layer):
    """`y = Q(x)`: the identity with a fake quantizer on its input.

    Forward and gradients are the quantizer's (LSQ: Esser et al., ICLR 2020,
    eq. 1-5). In the export graph the layer is a `keras.layers.Identity`,
    and the tensor it reads carries its learned 8-bit range.

    Args:
        input_quantizer: the quantizer of the tensor (per tensor): a name,
            dict or instance.
        layer_input: True when it quantizes, for quantized layers that read
            the tensor, the input they would quantize themselves (a tensor
            several operations read has one int8 scale,
            `kq.tensor_coverage.shared_tensors`): PTQ calibrates it, and the
            sweeps and the summary count it, as those layers' input quantizer.
        **kwargs: the arguments of `keras.layers.Layer` (`name`, ...).

    Example:
        >>> identity = kq.layers.QuantIdentity(kq.quantizers.LSQ(bits=8, per_sample=True))

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020.
        Jacob et al., "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018, sec. 3
        (every tensor of the integer graph fake-quantized in training).
    """

    def __init__(self, input_quantizer, layer_input=False, **kwargs):
        super().__init__(**kwargs)
        self.input_quantizer = quantizers_lib.get(input_quantizer)
        self.layer_input = bool(layer_input)
        self._weights_holder = Untracked({})

    @property
    def input_quantizer_weights(self):
        """The quantizer's variables by role (e.g. "step")."""
        return self._weights_holder.value

    def build(self, input_shape):
        self._weights_holder.value = self.input_quantizer.build(tuple(input_shape), "input", self)

    def call(self, inputs, training=None):
        return self.input_quantizer(inputs, self.input_quantizer_weights, training=bool(training))

    def compute_output_shape(self, input_shape):
        return input_shape

    def tensor_quantizers(self):
        """`{"input": quantizer}`: its one quantized tensor."""
        return {"input": self.input_quantizer}

    def uninitialized_quantizers(self):
        """`["input"]` while the quantizer never saw data, else `[]`."""
        initialized = self.input_quantizer.is_initialized(self.input_quantizer_weights)
        return [] if initialized else ["input"]

    def calibration_weights(self):
        """The variables a calibration forward sets (while it never saw data)."""
        if not self.uninitialized_quantizers():
            return []
        return list(self.input_quantizer_weights.values())

    def export_input_ranges(self):
        """`[(min, max)]`: the 8-bit range of the tensor it reads in the export graph."""
        from kqrobust.export import ranges

        return [ranges.activation_range(self.input_quantizer, self.input_quantizer_weights)]

    def export_layer(self):
        """The export-graph layer: an identity (the range is on its input tensor)."""
        return keras.layers.Identity(name=self.name)

    def get_config(self):
        config = super().get_config()
        config["input_quantizer"] = keras.saving.serialize_keras_object(self.input_quantizer)
        config["layer_input"] = self.layer_input
        return config
