"""AdaQuant / QDrop reconstruction lowers the layer output error it optimises."""

import keras
import numpy as np
import pytest

from kqrobust import ptq
from kqrobust import quantize_model
from kqrobust.ptq import Reconstruction
from kqrobust.ptq.calibrate import calibrate_ranges
from kqrobust.ptq.float_view import float_view

FAST = Reconstruction(iterations=40)


def build(trained_cnn, weight_bits, activation_bits):
    fmodel = float_view(trained_cnn, add_bias=True)
    recipe = ptq.recipe_for("adaquant", weight_bits, activation_bits)
    return fmodel, quantize_model(fmodel, recipe=recipe)


def layer_output(model, name, x):
    return keras.Model(model.inputs, model.get_layer(name).output).predict(x, verbose=0)


@pytest.mark.parametrize("drop", [False, True], ids=["adaquant", "qdrop"])
def test_every_layer_error_goes_down(trained_cnn, digits, drop):
    x = digits[0][0][:200]
    fmodel, qmodel = build(trained_cnn, 3, 4)
    calibrate_ranges(qmodel, fmodel, x, "mse")
    log = ptq.reconstruct(qmodel, fmodel, x, FAST, drop=drop)
    assert list(log) == ["stem", "dw", "pw", "conv2", "logits"]
    for name, errors in log.items():
        assert errors["after"] < errors["before"], (name, errors)
    # The logged error is the layer's pre-activation MSE against the float model:
    # check it on 'pw' (a linear layer) with plain Keras sub-models.
    expected = np.mean((layer_output(qmodel, "pw", x) - layer_output(trained_cnn, "pw", x)) ** 2)
    np.testing.assert_allclose(log["pw"]["after"], expected, rtol=1e-4)


def test_qdrop_with_keep_prob_one_is_adaquant(trained_cnn, digits):
    x = digits[0][0][:100]
    settings = Reconstruction(iterations=10, keep_prob=1.0)
    outputs = []
    for method in ("adaquant", "qdrop"):
        qmodel = ptq.quantize(
            trained_cnn,
            x,
            method=method,
            weight_bits=3,
            activation_bits=4,
            reconstruction=settings,
            seed=3,
        )
        outputs.append(qmodel.predict(x[:16], verbose=0))
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    qdrop = ptq.quantize(
        trained_cnn,
        x,
        method="qdrop",
        weight_bits=3,
        activation_bits=4,
        reconstruction=Reconstruction(iterations=10),
        seed=3,
    )
    assert np.abs(qdrop.predict(x[:16], verbose=0) - outputs[0]).max() > 1e-4


def test_adaquant_changes_weights_and_steps_from_the_init(trained_cnn, digits):
    x = digits[0][0][:100]
    settings = Reconstruction(iterations=10, init_method="aciq_laplace")
    start = ptq.quantize(
        trained_cnn,
        x,
        method="aciq_laplace",
        weight_bits=3,
        activation_bits=4,
        bias_correction=True,
    )  # same structure (biases added), no reconstruction
    tuned = ptq.quantize(
        trained_cnn, x, method="adaquant", weight_bits=3, activation_bits=4, reconstruction=settings
    )
    for name in ("dw", "conv2"):
        a, b = start.get_layer(name), tuned.get_layer(name)
        assert np.abs(np.asarray(a.kernel) - np.asarray(b.kernel)).max() > 0
        assert np.abs(np.asarray(a.kernel) - np.asarray(b.kernel)).max() < 1e-3  # lr 1e-5
        step_a = np.asarray(a.kernel_quantizer_weights["step"])
        step_b = np.asarray(b.kernel_quantizer_weights["step"])
        assert not np.allclose(step_a, step_b)
        np.testing.assert_allclose(step_a, step_b, rtol=0.05)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"iterations": 0}, "iterations must be a positive int"),
        ({"batch_size": 2.5}, "batch_size must be a positive int"),
        ({"kernel_lr": -1.0}, "kernel_lr must be >= 0"),
        ({"keep_prob": 0.0}, r"keep_prob must be in \(0, 1\]"),
        ({"init_method": "adaquant"}, "init_method must be one of"),
    ],
)
def test_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Reconstruction(**kwargs)
