"""The LSQ QAT of the shared trained CNN, for the evaluation tests."""

import keras
import pytest


@pytest.fixture(scope="session")
def qat_cnn(trained_cnn, digits):
    """LSQ W4A4 QAT of the trained CNN, one short epoch."""
    import kqrobust as kq

    (x_train, y_train), _ = digits
    qmodel = kq.quantize_model(trained_cnn, recipe="lsq", weight_bits=4, activation_bits=4)
    qmodel.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(x_train[:512], y_train[:512], batch_size=64, epochs=1, verbose=0)
    return qmodel
