"""A small CNN trained briefly on digits, shared by the PTQ tests."""

import keras
import pytest

from kqrobust.testing import small_cnn


@pytest.fixture(scope="session")
def trained_cnn(digits):
    (x_train, y_train), _ = digits
    model = small_cnn(width=16, seed=0)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=6, verbose=0)
    return model
