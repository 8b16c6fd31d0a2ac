"""Test configuration: quiet TF logs, a fixed seed, shared digits data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust.datasets import load_digits  # noqa: E402
from kqrobust.testing import small_cnn  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """`(x_train, y_train), (x_test, y_test)` of the bundled digits."""
    return load_digits()


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """`small_cnn(width=16)` trained 6 epochs on digits (PTQ and evaluation tests)."""
    (x_train, y_train), _ = digits
    model = small_cnn(width=16, seed=0)
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    # Keras' default BatchNorm momentum lags a short run: re-estimate the statistics at the end.
    model.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=6,
        verbose=0,
        callbacks=[kq.callbacks.BatchNormRecalibration(x_train)],
    )
    return model


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1337)
