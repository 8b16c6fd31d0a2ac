"""QuantIdentity: the identity with a fake quantizer, against NumPy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust import quantizers


def _identity(signed=True):
    return kq.layers.QuantIdentity(
        quantizers.LSQ(bits=8, signed=signed, narrow_range=False, per_sample=True)
    )


def test_forward_is_lsq_on_8_bits_and_the_gradient_passes_inside_the_grid():
    x = np.random.default_rng(0).normal(size=(4, 6, 5)).astype("float32") * 3
    layer = _identity()
    layer.build(x.shape)
    assert layer.uninitialized_quantizers() == ["input"]
    layer.input_quantizer.set_step(layer.input_quantizer_weights, 0.02)
    assert layer.uninitialized_quantizers() == [] and layer.calibration_weights() == []
    x_tensor = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x_tensor)
        y = layer(x_tensor, training=True)
    dx = tape.gradient(y, x_tensor).numpy()
    # Esser et al., ICLR 2020, eq. 1: round(clip(x / s, -Qn, Qp)) * s, signed 8 bits.
    codes = np.clip(np.round(x.astype(np.float64) / 0.02), -128, 127)
    np.testing.assert_allclose(y.numpy(), codes * 0.02, atol=1e-6)
    # Straight-through inside the clip range, zero outside (eq. 5).
    inside = (x / 0.02 >= -128) & (x / 0.02 <= 127)
    np.testing.assert_array_equal(dx, inside.astype("float32"))
    assert 0 < inside.mean() < 1  # both cases are exercised


def test_unsigned_export_range_and_export_layer():
    layer = _identity(signed=False)
    layer.build((None, 3))
    layer.input_quantizer.set_step(layer.input_quantizer_weights, 0.5)
    assert layer.export_input_ranges() == [(0.0, 255 * 0.5)]
    export = layer.export_layer()
    assert isinstance(export, keras.layers.Identity) and export.name == layer.name


def test_first_training_batch_sets_the_step_from_the_range_and_inference_writes_nothing():
    x = np.random.default_rng(1).normal(size=(8, 10)).astype("float32")
    layer = _identity()
    layer.build(x.shape)
    layer(x)  # inference: no write
    assert layer.uninitialized_quantizers() == ["input"]
    layer(x, training=True)
    # 8-bit activations start on the smallest grid holding the range (step_init="auto").
    np.testing.assert_allclose(
        layer.input_quantizer_weights["step"].numpy(), max(x.max() / 127, -x.min() / 128), rtol=1e-6
    )


def test_a_model_with_it_saves_and_loads(tmp_path):
    inputs = keras.Input((5,))
    outputs = _identity()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(2).normal(size=(16, 5)).astype("float32")
    model(x, training=True)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)  # safe mode, no custom_objects
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert (
        loaded.layers[-1].input_quantizer.get_config()
        == model.layers[-1].input_quantizer.get_config()
    )


def test_predict_before_any_data_is_an_error():
    inputs = keras.Input((5,))
    model = keras.Model(inputs, _identity()(inputs))
    with pytest.raises(ValueError, match="never saw data"):
        kq.layers.check_initialized(model, "predict")
