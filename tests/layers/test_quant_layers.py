"""Quantized Conv2D / DepthwiseConv2D / Dense against float layers fed NumPy-quantized tensors."""

import keras
import numpy as np
import pytest

from kqrobust import layers as qlayers
from kqrobust import quantizers
from kqrobust.testing import TestCase
from kqrobust.testing.numpy_quant import np_quant

LAYERS = [
    (
        qlayers.QuantConv2D,
        keras.layers.Conv2D,
        dict(filters=5, kernel_size=3, padding="same"),
        (2, 6, 6, 3),
    ),
    (
        qlayers.QuantDepthwiseConv2D,
        keras.layers.DepthwiseConv2D,
        dict(kernel_size=3, depth_multiplier=2, padding="valid"),
        (2, 6, 6, 3),
    ),
    (qlayers.QuantDense, keras.layers.Dense, dict(units=4), (3, 7)),
]


@pytest.mark.parametrize("quant_cls,float_cls,kwargs,shape", LAYERS)
def test_quantized_layer_matches_float_layer_on_quantized_tensors(
    quant_cls, float_cls, kwargs, shape
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    layer = quant_cls(
        **kwargs,
        kernel_quantizer=quantizers.LSQ(
            bits=4, channel_axis=qlayers.registry.kernel_channel_axes(float_cls(**kwargs))
        ),
        input_quantizer=quantizers.LSQ(bits=4, narrow_range=False, per_sample=True),
    )
    layer.build(shape)
    # Built: the weight steps come from the kernel; the input step waits for data.
    assert layer.uninitialized_quantizers() == ["input"]
    y = layer(x, training=True).numpy()  # the first training batch sets the input step
    assert layer.uninitialized_quantizers() == []
    np.testing.assert_array_equal(layer(x).numpy(), y)
    kernel = layer.kernel.numpy()
    k_step = layer.kernel_quantizer_weights["step"].numpy()
    x_step = layer.input_quantizer_weights["step"].numpy()
    # LSQ's init (Esser et al., ICLR 2020): 2 mean|v| / sqrt(Qp), per channel for weights.
    axes = tuple(range(kernel.ndim - np.ndim(k_step)))
    np.testing.assert_allclose(k_step, 2 * np.abs(kernel).mean(axis=axes) / np.sqrt(7), rtol=1e-5)
    np.testing.assert_allclose(x_step, 2 * np.abs(x).mean() / np.sqrt(7), rtol=1e-5)
    reference = float_cls(**kwargs)
    reference.build(shape)
    reference.set_weights([np_quant(kernel, k_step, 4, True, True), layer.bias.numpy()])
    expected = reference(np_quant(x, x_step, 4, True, False)).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("quant_cls,float_cls,kwargs,shape", LAYERS)
def test_without_quantizers_the_layer_is_the_float_layer(quant_cls, float_cls, kwargs, shape):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    layer, reference = quant_cls(**kwargs), float_cls(**kwargs)
    layer.build(shape)
    reference.build(shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), rtol=1e-6, atol=1e-6)
    assert [v.name for v in layer.weights] == [v.name for v in reference.weights]


class HooksTest(TestCase):
    def test_weight_transform_and_kernel_losses_see_the_transformed_kernel(self):
        seen = []

        def halve(kernel):
            return 0.5 * kernel

        def record(kernel):
            seen.append(kernel)
            return keras.ops.sum(kernel) * 0.0 + 1.0

        layer = qlayers.QuantDense(3, weight_transform=halve, kernel_losses=[record])
        x = np.ones((2, 4), "float32")
        layer(x, training=True)
        self.assertAllClose(seen[-1], 0.5 * layer.kernel.numpy())
        self.assertEqual(len(layer.losses), 1)
        layer(x, training=False)
        self.assertEqual(len(layer.losses), 0)

    def test_input_perturbation_acts_in_training_only(self):
        def add_one(x, step):
            return x + 1.0

        layer = qlayers.QuantDense(
            2, use_bias=False, input_perturbation=add_one, kernel_initializer="ones"
        )
        x = np.zeros((1, 3), "float32")
        self.assertAllClose(layer(x, training=False), [[0.0, 0.0]])
        self.assertAllClose(layer(x, training=True), [[3.0, 3.0]])

    def test_serialization_and_saving(self):
        layer = qlayers.QuantConv2D(
            4,
            3,
            kernel_quantizer=quantizers.LSQ(bits=3, channel_axis=-1),
            input_quantizer=quantizers.LSQ(bits=5, signed=False, per_sample=True),
        )
        revived = self.run_serialization_test(layer)
        self.assertEqual(revived.kernel_quantizer, layer.kernel_quantizer)
        inputs = keras.Input((6, 6, 2))
        model = keras.Model(inputs, layer(inputs))
        x = np.random.default_rng(2).random((3, 6, 6, 2)).astype("float32")
        loaded = self.run_model_saving_test(model, x)
        self.assertEqual([v.path for v in loaded.weights], [v.path for v in model.weights])
