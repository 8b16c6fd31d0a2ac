"""Quantized Conv2DTranspose against the float Keras layer fed NumPy-quantized tensors."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import layers as qlayers
from kqrobust import quantizers
from kqrobust.export import fold
from kqrobust.layers import registry
from kqrobust.testing import TestCase
from kqrobust.testing.numpy_quant import np_quant

CONFIGS = [
    dict(filters=5, kernel_size=3, strides=2, padding="same"),
    dict(filters=5, kernel_size=3, strides=2, padding="valid"),
    dict(filters=4, kernel_size=3, strides=2, padding="same", output_padding=0),
    dict(filters=4, kernel_size=4, strides=2, padding="valid", output_padding=1),
    dict(filters=3, kernel_size=(3, 2), strides=(2, 1), padding="same", activation="relu"),
]
SHAPE = (2, 5, 6, 3)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_quantized_layer_matches_float_layer_on_quantized_tensors(kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=SHAPE).astype("float32")
    axes = registry.kernel_channel_axes(keras.layers.Conv2DTranspose(**kwargs))
    assert axes is None  # one weight step: the output channels are axis -2
    layer = qlayers.QuantConv2DTranspose(
        **kwargs,
        bias_initializer="random_normal",
        kernel_quantizer=quantizers.LSQ(bits=4, channel_axis=axes),
        input_quantizer=quantizers.LSQ(bits=4, narrow_range=False, per_sample=True),
    )
    layer.build(SHAPE)
    assert layer.uninitialized_quantizers() == ["input"]
    y = layer(x, training=True).numpy()  # The first training batch sets the input step.
    assert layer.uninitialized_quantizers() == []
    np.testing.assert_array_equal(layer(x).numpy(), y)
    kernel = layer.kernel.numpy()
    k_step = layer.kernel_quantizer_weights["step"].numpy()
    x_step = layer.input_quantizer_weights["step"].numpy()
    assert k_step.shape == ()
    # LSQ's init (Esser et al., ICLR 2020): 2 mean|v| / sqrt(Qp).
    np.testing.assert_allclose(k_step, 2 * np.abs(kernel).mean() / np.sqrt(7), rtol=1e-5)
    reference = keras.layers.Conv2DTranspose(**kwargs)
    reference.build(SHAPE)
    reference.set_weights([np_quant(kernel, k_step, 4, True, True), layer.bias.numpy()])
    expected = reference(np_quant(x, x_step, 4, True, False)).numpy()
    assert y.shape == expected.shape == tuple(reference.compute_output_shape(SHAPE))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_without_quantizers_the_layer_is_the_float_layer(kwargs):
    x = np.random.default_rng(1).normal(size=SHAPE).astype("float32")
    layer = qlayers.QuantConv2DTranspose(**kwargs)
    reference = keras.layers.Conv2DTranspose(**kwargs)
    layer.build(SHAPE)
    reference.build(SHAPE)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), rtol=1e-6, atol=1e-6)
    assert [v.name for v in layer.weights] == [v.name for v in reference.weights]


def test_registry_entry():
    layer = keras.layers.Conv2DTranspose(4, 3)
    layer_type = registry.layer_type_of(layer)
    assert layer_type.quant_class is qlayers.QuantConv2DTranspose
    assert layer_type.export_class is qlayers.ExportConv2DTranspose
    assert layer_type.kind == "conv" and not layer_type.fuses_relu
    assert registry.kernel_output_axes(layer) == -2
    # TFLite's TRANSPOSE_CONV weights are (out, kh, kw, in), per channel on dimension 0.
    kernel = np.arange(3 * 2 * 4 * 5).reshape(3, 2, 4, 5)
    np.testing.assert_array_equal(layer_type.tflite_weights.layout(kernel)[2], kernel[:, :, 2, :])
    assert layer_type.tflite_weights.axis == 0


def test_batchnorm_folds_along_the_output_channels():
    """`BN(ct(x))` equals `ct'(x)` with the folded kernel and bias: the scale goes
    on the kernel's axis -2 (out), the per-tensor step becomes `|a_c| * s`."""
    rng = np.random.default_rng(2)
    inputs = keras.Input((4, 4, 3))
    ct = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", bias_initializer="ones")
    bn = keras.layers.BatchNormalization()
    model = keras.Model(inputs, bn(ct(inputs)))
    bn.set_weights(
        [
            rng.choice([-1.0, 1.0], 5) * rng.uniform(0.5, 2, 5),
            rng.normal(0, 0.2, 5),
            rng.normal(0, 0.2, 5),
            rng.uniform(0.5, 2, 5),
        ]
    )
    scale, shift = fold.batchnorm_scale_shift(bn)
    kernel, bias = fold.fold_batchnorm(
        np.asarray(ct.kernel),
        np.asarray(ct.bias),
        scale,
        shift,
        channel_axes=registry.kernel_output_axes(ct),
    )
    folded = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same")
    folded.build((None, 4, 4, 3))
    folded.set_weights([kernel, bias])
    x = rng.normal(size=(2, 4, 4, 3)).astype("float32")
    np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fold.fold_step(np.float64(0.1), scale), 0.1 * np.abs(scale))


def test_symreg_and_probes_use_the_output_channels():
    """SymReg gets channel_axis -2 (per output channel, not per tensor)."""
    inputs = keras.Input((4, 4, 2))
    x = keras.layers.Conv2DTranspose(3, 3, strides=2, padding="same", name="ct")(inputs)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))
    data = np.random.default_rng(3).random((16, 4, 4, 2)).astype("float32")
    qmodel = kq.quantize_model(
        model, recipe="symreg", weight_bits=4, activation_bits=8, calibration_data=data
    )
    layer = qmodel.get_layer("ct")
    assert isinstance(layer, qlayers.QuantConv2DTranspose)
    assert [r.channel_axis for r in layer.kernel_losses] == [-2]
    targets = kq.probes.perturbation.perturbation_targets(qmodel)
    assert any(t.variable is layer.kernel for t in targets)


class SerializationTest(TestCase):
    def test_config_round_trip_and_keras_file(self):
        layer = qlayers.QuantConv2DTranspose(
            4,
            3,
            strides=2,
            padding="same",
            output_padding=1,
            kernel_quantizer=quantizers.LSQ(bits=4),
            input_quantizer=quantizers.LSQ(bits=8, signed=False),
        )
        self.run_serialization_test(layer)
        inputs = keras.Input((3, 3, 2))
        model = keras.Model(inputs, layer(inputs))
        x = np.random.default_rng(4).random((2, 3, 3, 2)).astype("float32")
        model(x, training=True)  # sets the input step
        self.run_model_saving_test(model, x)
