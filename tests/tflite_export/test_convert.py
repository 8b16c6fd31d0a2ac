"""The `tflite_export/convert.py` command line, end to end on digits."""

import importlib.util
import pathlib

import keras
import numpy as np
import pytest

from kqrobust.testing import small_cnn

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load_script():
    spec = importlib.util.spec_from_file_location("convert", ROOT / "tflite_export" / "convert.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def saved_model(digits, tmp_path_factory):
    (x_train, y_train), _ = digits
    model = small_cnn(width=8, seed=0)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("cli") / "model.keras"
    model.save(path)
    return str(path)


def test_converts_and_prints_reports(saved_model, tmp_path, capsys):
    tflite, onnx = str(tmp_path / "m.tflite"), str(tmp_path / "m.onnx")
    results = _load_script().main([saved_model, f"--tflite={tflite}", f"--onnx={onnx}",
                                   "--io_dtype=uint8"])
    out = capsys.readouterr().out
    assert pathlib.Path(tflite).stat().st_size > 0 and pathlib.Path(onnx).stat().st_size > 0
    assert "argmax agreement" in out and "litert accuracy" in out
    assert "onnxruntime accuracy" in out
    assert "Edge TPU check" in out and "every op maps to the Edge TPU" in out
    assert results["tflite"].agreement >= 0.97 and results["onnx"].agreement >= 0.97


def test_npy_representative_and_verification_data(saved_model, digits, tmp_path, capsys):
    (x_train, _), (x_test, y_test) = digits
    for name, array in (("calib", x_train[:64]), ("x", x_test[:50]), ("y", y_test[:50])):
        np.save(tmp_path / f"{name}.npy", array)
    results = _load_script().main([
        saved_model, f"--tflite={tmp_path / 'm.tflite'}",
        f"--representative={tmp_path / 'calib.npy'}", f"--verify_data={tmp_path / 'x.npy'}",
        f"--verify_labels={tmp_path / 'y.npy'}"])
    assert results["tflite"].num_samples == 50
    assert "samples            50" in capsys.readouterr().out


def test_needs_an_output(saved_model):
    with pytest.raises(SystemExit):
        _load_script().main([saved_model])


def test_bad_input_shape(saved_model):
    with pytest.raises(SystemExit):
        _load_script().main([saved_model, "--tflite=x.tflite", "--input_shape=8,x"])
