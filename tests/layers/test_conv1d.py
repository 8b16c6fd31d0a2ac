"""Quantized Conv1D / DepthwiseConv1D against the float Keras layers fed NumPy-quantized tensors."""

import keras
import numpy as np
import pytest

from kqrobust import layers as qlayers
from kqrobust import quantizers
from kqrobust.layers import conv1d
from kqrobust.testing import TestCase
from kqrobust.testing.numpy_quant import np_quant

LAYERS = [
    (
        qlayers.QuantConv1D,
        keras.layers.Conv1D,
        dict(filters=5, kernel_size=3, padding="causal", dilation_rate=2),
    ),
    (
        qlayers.QuantConv1D,
        keras.layers.Conv1D,
        dict(filters=5, kernel_size=4, padding="causal", strides=2),
    ),
    (
        qlayers.QuantConv1D,
        keras.layers.Conv1D,
        dict(filters=4, kernel_size=3, padding="same", strides=2),
    ),
    (qlayers.QuantConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3, groups=2)),
    (
        qlayers.QuantDepthwiseConv1D,
        keras.layers.DepthwiseConv1D,
        dict(kernel_size=3, depth_multiplier=2, padding="same"),
    ),
    (
        qlayers.QuantDepthwiseConv1D,
        keras.layers.DepthwiseConv1D,
        dict(kernel_size=3, dilation_rate=2),
    ),
]
SHAPE = (2, 11, 4)


@pytest.mark.parametrize("quant_cls,float_cls,kwargs", LAYERS)
def test_quantized_layer_matches_float_layer_on_quantized_tensors(quant_cls, float_cls, kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=SHAPE).astype("float32")
    axes = qlayers.registry.kernel_channel_axes(float_cls(**kwargs))
    layer = quant_cls(
        **kwargs,
        bias_initializer="random_normal",
        kernel_quantizer=quantizers.LSQ(bits=4, channel_axis=axes),
        input_quantizer=quantizers.LSQ(bits=4, narrow_range=False, per_sample=True),
    )
    layer.build(SHAPE)
    y = layer(x, training=True).numpy()  # The first training batch sets the input step.
    assert layer.uninitialized_quantizers() == []
    kernel = layer.kernel.numpy()
    k_step = layer.kernel_quantizer_weights["step"].numpy()
    x_step = layer.input_quantizer_weights["step"].numpy()
    # One weight step per output channel: (out,) for Conv1D, (in, multiplier) for depthwise.
    assert k_step.shape == kernel.shape[-np.ndim(k_step) :]
    assert np.ndim(k_step) == (2 if float_cls is keras.layers.DepthwiseConv1D else 1)
    reference = float_cls(**kwargs)
    reference.build(SHAPE)
    reference.set_weights([np_quant(kernel, k_step, 4, True, True), layer.bias.numpy()])
    expected = reference(np_quant(x, x_step, 4, True, False)).numpy()
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quant_cls,float_cls,kwargs", LAYERS)
def test_without_quantizers_the_layer_is_the_float_layer(quant_cls, float_cls, kwargs):
    x = np.random.default_rng(1).normal(size=SHAPE).astype("float32")
    layer, reference = quant_cls(**kwargs), float_cls(**kwargs)
    layer.build(SHAPE)
    reference.build(SHAPE)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), rtol=1e-6, atol=1e-6)
    assert [v.name for v in layer.weights] == [v.name for v in reference.weights]


def test_causal_padding_is_dilation_times_kernel_minus_one_on_the_left():
    layer = keras.layers.Conv1D(2, 4, padding="causal", dilation_rate=3)
    assert conv1d.causal_padding(layer) == [[0, 0], [9, 0], [0, 0]]
    # Causal: output step t depends on inputs up to t only.
    quant = qlayers.QuantConv1D(2, 4, padding="causal", dilation_rate=3)
    x = np.random.default_rng(2).normal(size=(1, 20, 3)).astype("float32")
    changed = x.copy()
    changed[:, 12:] += 1.0
    np.testing.assert_array_equal(quant(x).numpy()[:, :12], quant(changed).numpy()[:, :12])


class SerializationTest(TestCase):
    def test_conv1d_round_trip_and_saving(self):
        layer = qlayers.QuantConv1D(
            4,
            3,
            padding="causal",
            kernel_quantizer=quantizers.LSQ(bits=3, channel_axis=-1),
            input_quantizer=quantizers.LSQ(bits=5, signed=False, per_sample=True),
        )
        revived = self.run_serialization_test(layer)
        self.assertEqual(revived.kernel_quantizer, layer.kernel_quantizer)
        inputs = keras.Input((9, 2))
        outputs = qlayers.QuantDepthwiseConv1D(
            3, depth_multiplier=2, kernel_quantizer=quantizers.LSQ(bits=4, channel_axis=(-2, -1))
        )(layer(inputs))
        model = keras.Model(inputs, outputs)
        x = np.random.default_rng(3).random((3, 9, 2)).astype("float32")
        model(x, training=True)
        loaded = self.run_model_saving_test(model, x)
        self.assertEqual([v.path for v in loaded.weights], [v.path for v in model.weights])
