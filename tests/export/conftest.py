"""Small CNNs trained briefly on digits, shared by the export tests."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import export
from kqrobust.testing import small_cnn


def _compile(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


@pytest.fixture(scope="session")
def float_cnn(digits):
    (x_train, y_train), _ = digits
    model = small_cnn(width=16, seed=0)
    _compile(model, 3e-3)
    # Keras' default BatchNorm momentum lags a short run: re-estimate the statistics at the end.
    model.fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=12,
        verbose=0,
        callbacks=[kq.callbacks.BatchNormRecalibration(x_train)],
    )
    return model


@pytest.fixture(scope="session")
def qat_models(float_cnn, digits):
    """`{"w8a8": model, "w4a8": model}` trained by `kq.quantize_model`."""
    (x_train, y_train), _ = digits
    models = {}
    for name, bits in (("w8a8", 8), ("w4a8", 4)):
        keras.utils.set_random_seed(0)
        qmodel = kq.quantize_model(float_cnn, weight_bits=bits, activation_bits=8)
        _compile(qmodel, 5e-4)
        qmodel.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
        models[name] = qmodel
    return models


@pytest.fixture(scope="session")
def all_digits(digits):
    """Every digit (train and test, 1,797 samples): 1 sample = 0.06 points."""
    (x_train, y_train), (x_test, y_test) = digits
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


@pytest.fixture(scope="session")
def exported(qat_models, digits, tmp_path_factory):
    """`{(name, io_dtype): path}` for both QAT models, int8 and uint8 I/O."""
    (x_train, _), _ = digits
    out = tmp_path_factory.mktemp("tflite")
    paths = {}
    for name, model in qat_models.items():
        for io_dtype in ("int8", "uint8"):
            path = str(out / f"{name}_{io_dtype}.tflite")
            export.to_tflite(model, x_train[:200], path, io_dtype=io_dtype)
            paths[name, io_dtype] = path
    return paths
