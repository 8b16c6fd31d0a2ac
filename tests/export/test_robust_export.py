"""Models trained with SatNL (QAT, kq.robustify) keep their parity after export (LiteRT, ORT)."""

import keras
import numpy as np
import pytest

import kqrobust as kq

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def robust_qat(float_cnn, digits):
    """`robust` (SatNL + SymReg + ASAM) QAT at W4A8, from the trained float CNN."""
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    qmodel = kq.quantize_model(float_cnn, recipe="robust", weight_bits=4, activation_bits=8)
    qmodel.compile(
        keras.optimizers.Adam(5e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
    return qmodel


def check(result):
    assert result.agreement >= 0.99, result.table()
    assert abs(result.runtime_accuracy - result.keras_accuracy) <= 0.005, result.table()
    assert result.keras_accuracy > 0.85, result.table()


@pytest.mark.ci
def test_satnl_qat_model_tflite_parity(robust_qat, digits, all_digits, tmp_path):
    (x_train, _), _ = digits
    layer = robust_qat.get_layer("pw")
    assert isinstance(layer.weight_transform, kq.transforms.SatNL)
    # SatNL matters here: f(W) differs from W, so an export that dropped it would drift.
    assert np.abs(layer.transformed_kernel().numpy() - layer.kernel.numpy()).max() > 1e-3
    path = str(tmp_path / "robust.tflite")
    kq.export.to_tflite(robust_qat, x_train[:200], path)
    x, y = all_digits
    check(kq.export.verify(path, robust_qat, x, labels=y, print_report=False))


def test_satnl_qat_model_onnx_parity(robust_qat, all_digits, tmp_path):
    path = str(tmp_path / "robust.onnx")
    kq.export.to_onnx(robust_qat, path)
    x, y = all_digits
    check(kq.export.verify(path, robust_qat, x, labels=y, print_report=False))


def test_robustified_model_ptq_then_tflite_parity(digits, all_digits, tmp_path):
    (x_train, y_train), _ = digits
    rmodel = kq.robustify(kq.testing.small_cnn(width=16, seed=0), recipe="robust")
    rmodel.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    rmodel.fit(x_train, y_train, batch_size=64, epochs=8, verbose=0)
    pmodel = kq.ptq.quantize(
        rmodel, x_train[:256], method="minmax", weight_bits=8, activation_bits=8
    )
    path = str(tmp_path / "robustified.tflite")
    kq.export.to_tflite(pmodel, x_train[:200], path)
    x, y = all_digits
    check(kq.export.verify(path, pmodel, x, labels=y, print_report=False))
