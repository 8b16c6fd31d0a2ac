"""Bias correction removes the mean output error of each layer, per channel."""

import keras
import numpy as np

from kqrobust import ptq
from kqrobust import quantize_model


def mean_error(qmodel, reference, name, x):
    """Per-channel mean of (quantized - float) outputs, by plain Keras sub-models."""
    out_q = keras.Model(qmodel.inputs, qmodel.get_layer(name).output).predict(x, verbose=0)
    out_f = keras.Model(reference.inputs, reference.get_layer(name).output).predict(x, verbose=0)
    return (out_q - out_f).reshape(-1, out_q.shape[-1]).mean(axis=0)


def test_mean_error_vanishes_on_linear_layers(trained_cnn, digits):
    x = digits[0][0][:200]
    plain = ptq.quantize(trained_cnn, x, method="minmax", weight_bits=3, activation_bits=3)
    corrected = ptq.quantize(
        trained_cnn, x, method="minmax", weight_bits=3, activation_bits=3, bias_correction=True
    )
    for name in ("dw", "pw", "logits"):  # no activation: the output is the pre-activation
        before = np.abs(mean_error(plain, trained_cnn, name, x))
        after = np.abs(mean_error(corrected, trained_cnn, name, x))
        np.testing.assert_allclose(after, 0.0, atol=1e-4 + 1e-3 * before.max())
        assert after.max() < before.max()
    assert corrected.get_layer("pw").use_bias and not trained_cnn.get_layer("pw").use_bias


def test_corrections_are_returned_per_channel(trained_cnn, digits):
    x = digits[0][0][:64]
    fmodel = ptq.float_view(trained_cnn, add_bias=True)
    recipe = ptq.recipe_for("minmax", 2, None)
    qmodel = quantize_model(fmodel, recipe=recipe)
    ptq.calibrate_ranges(qmodel, fmodel, x, "minmax")
    biases = {n: np.asarray(qmodel.get_layer(n).bias) for n in ("stem", "dw", "conv2")}
    corrections = ptq.correct_biases(qmodel, fmodel, x)
    assert list(corrections) == ["stem", "dw", "pw", "conv2", "logits"]
    for name, before in biases.items():
        assert corrections[name].shape == before.shape
        np.testing.assert_allclose(
            np.asarray(qmodel.get_layer(name).bias), before - corrections[name], atol=1e-6
        )
