"""`QuantModel.fit` leaves every bias on the int32 grid of the full-integer file.

The arithmetic itself (grids, LiteRT parity) is tested in
tests/export/test_int32_bias.py; here, that `fit` applies it after the
BatchNorm re-estimation, that it can be turned off, and that the setting is
saved.
"""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export import graph
from kqrobust.testing import small_cnn

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _fitted(digits, **settings):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    qmodel = kq.quantize_model(small_cnn(), weight_bits=4, activation_bits=8)
    for name, value in settings.items():
        setattr(qmodel, name, value)
    qmodel.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    history = qmodel.fit(
        x_train[:512],
        y_train[:512],
        batch_size=64,
        epochs=2,
        verbose=0,
        validation_data=(x_test, y_test),
    )
    return qmodel, history


def _largest_shift(qmodel):
    """The largest move `round_biases_to_int32` would still make (0 when
    every bias is on its grid)."""
    shifts = graph.int32_bias_shifts(qmodel).values()
    return max(float(np.max(np.abs(shift))) for _, shift in shifts)


def test_fit_rounds_biases_after_the_batchnorm_reestimation(digits):
    qmodel, history = _fitted(digits)
    # Every bias is on its grid, with the BatchNorm statistics fit re-estimated last.
    assert _largest_shift(qmodel) == 0.0
    assert kq.round_biases_to_int32(qmodel) == []
    # The logged validation accuracy is that of the rounded model.
    _, (x_test, y_test) = digits
    result = qmodel.evaluate(x_test, y_test, verbose=0, return_dict=True)
    assert history.history["val_accuracy"][-1] == pytest.approx(result["accuracy"], abs=1e-6)


def test_fit_can_leave_the_biases_in_float(digits, tmp_path):
    qmodel, _ = _fitted(digits, int32_biases=False)
    assert _largest_shift(qmodel) > 0.0
    path = str(tmp_path / "float_biases.keras")
    qmodel.save(path)
    assert keras.models.load_model(path).int32_biases is False
