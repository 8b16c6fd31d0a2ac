"""A small CNN trained briefly on digits (and its LSQ QAT), shared by the evaluation tests."""

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


@pytest.fixture(scope="session")
def qat_cnn(trained_cnn, digits):
    """LSQ W4A4 QAT of the trained CNN, one short epoch."""
    import kqrobust as kq
    (x_train, y_train), _ = digits
    qmodel = kq.quantize_model(trained_cnn, recipe="lsq", weight_bits=4, activation_bits=4)
    qmodel.compile(keras.optimizers.Adam(1e-3),
                   keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qmodel.fit(x_train[:512], y_train[:512], batch_size=64, epochs=1, verbose=0)
    return qmodel
