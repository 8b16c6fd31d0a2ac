"""Quantizers under the "mixed_float16" policy: float32 arithmetic, finite step gradients."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.testing import small_cnn

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_step_gradient_of_a_large_float16_activation_is_finite_and_exact():
    """A 64x32x32x32 float16 activation at Keras' starting loss scale (2^15)."""
    rng = np.random.default_rng(0)
    x = np.abs(rng.normal(size=(64, 32, 32, 32))).astype("float16")
    upstream = rng.uniform(-1, 1, size=x.shape).astype("float16")
    step = tf.Variable(0.05, dtype="float32")
    g = 1 / np.sqrt(x[0].size * 15)

    def step_gradient(dtype):
        with tf.GradientTape() as tape:
            y = kq.ops.lsq_quantize(tf.constant(x, dtype), step, 4, signed=False, grad_scale=g)
            loss = tf.reduce_sum(tf.cast(y * tf.constant(upstream * 2**15, dtype), "float32"))
        assert y.dtype == dtype
        return tape.gradient(loss, step).numpy()

    grad = step_gradient(tf.float16)
    assert np.isfinite(grad)
    # The same values in float32 (they are exact there) give the same gradient.
    np.testing.assert_allclose(grad, step_gradient(tf.float32), rtol=1e-5)
    # LSQ's step gradient (Esser et al., ICLR 2020, eq. 3) in float64; the sum
    # of 2M terms of both signs cancels, so float32 accumulation keeps ~2 digits.
    v = x.astype(np.float64) / np.float64(np.float32(0.05))
    d = np.where(v >= 15, 15.0, np.round(v) - v)
    expected = 2**15 * g * np.sum(upstream.astype(np.float64) * d)
    np.testing.assert_allclose(grad, expected, rtol=0.05)


def quantized_small_cnn(x, weights, quantized_weights=None):
    """A small_cnn W4A4 QAT model of `weights`, its steps calibrated on `x` (or set)."""
    model = small_cnn()
    model.set_weights(weights)
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=4, calibration_data=x)
    if quantized_weights is not None:
        qmodel.set_weights(quantized_weights)
    return qmodel


def step_gradients(qmodel, x, y):
    """The loss gradients of every quantizer step of `qmodel`, one vector."""
    steps = [v for v in qmodel.trainable_variables if v.name.endswith("_step")]
    assert all(v.dtype == "float32" for v in steps)
    with tf.GradientTape() as tape:
        loss = LOSS(y, tf.cast(qmodel(x, training=True), "float32"))
    return np.concatenate([np.ravel(g) for g in tape.gradient(loss, [v.value for v in steps])])


def test_step_gradients_agree_with_the_float32_policy(digits, mixed_float16):
    (x_train, y_train), _ = digits
    x, y = x_train[:64], y_train[:64]
    keras.mixed_precision.set_global_policy("float32")
    weights = small_cnn().get_weights()
    reference_model = quantized_small_cnn(x, weights)
    reference = step_gradients(reference_model, x, y)
    keras.mixed_precision.set_global_policy("mixed_float16")
    # Steps calibrated under each policy agree within 2% (float16 activations)...
    calibrated = quantized_small_cnn(x, weights)
    for ours, theirs in zip(calibrated.weights, reference_model.weights):
        if ours.name.endswith("_step"):
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=2e-2)
    # ...and with the same steps, the gradients agree. (Each policy's own steps would
    # compare two grids: an 8-bit step from the max of a float16 tensor is ~1e-3 off, which
    # moves the rounding residuals every step gradient sums; cosine 0.96 measured.)
    mixed = step_gradients(quantized_small_cnn(x, weights, reference_model.get_weights()), x, y)
    assert np.isfinite(mixed).all()
    cosine = mixed @ reference / (np.linalg.norm(mixed) * np.linalg.norm(reference))
    assert cosine >= 0.99, cosine


def test_w4a4_fit_under_mixed_precision_ends_near_float(digits, mixed_float16):
    (x_train, y_train), (x_test, y_test) = digits
    model = small_cnn()
    model.compile("adam", LOSS, metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=10, verbose=0)
    kq.recalibrate_batchnorm(model, x_train)
    float_accuracy = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=4)
    qmodel.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    history = qmodel.fit(x_train, y_train, batch_size=64, epochs=6, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    accuracy = qmodel.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy >= float_accuracy - 0.05, (accuracy, float_accuracy)
