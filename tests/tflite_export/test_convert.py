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
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x_train, y_train, batch_size=64, epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("cli") / "model.keras"
    model.save(path)
    return str(path)


def test_converts_and_prints_reports(saved_model, tmp_path, capsys):
    tflite, onnx = str(tmp_path / "m.tflite"), str(tmp_path / "m.onnx")
    results = _load_script().main(
        [saved_model, f"--tflite={tflite}", f"--onnx={onnx}", "--io_dtype=uint8"]
    )
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
    results = _load_script().main(
        [
            saved_model,
            f"--tflite={tmp_path / 'm.tflite'}",
            f"--representative={tmp_path / 'calib.npy'}",
            f"--verify_data={tmp_path / 'x.npy'}",
            f"--verify_labels={tmp_path / 'y.npy'}",
        ]
    )
    assert results["tflite"].num_samples == 50
    assert "samples            50" in capsys.readouterr().out


def test_needs_an_output(saved_model):
    with pytest.raises(SystemExit):
        _load_script().main([saved_model])


def test_bad_input_shape(saved_model):
    with pytest.raises(SystemExit):
        _load_script().main([saved_model, "--tflite=x.tflite", "--input_shape=8,x"])


@pytest.fixture(scope="module")
def saved_w4_model(digits, tmp_path_factory):
    """A W4A8 QAT small_cnn (calibrated, not trained: enough for the file types)."""
    import kqrobust as kq

    (x_train, _), _ = digits
    qmodel = kq.quantize_model(
        small_cnn(width=8, seed=0), weight_bits=4, activation_bits=8, calibration_data=x_train[:64]
    )
    path = tmp_path_factory.mktemp("cli_w4") / "w4.keras"
    qmodel.save(path)
    return str(path)


@pytest.mark.slow  # three exports and two verifications: about 18 s
def test_int4_and_16x8_flags(saved_w4_model, digits, tmp_path, capsys):
    """--weight_dtype int4 prints which layers went INT4 and the Edge TPU rule;
    --activation_dtype int16 writes int16 activations; int16 with --onnx and
    int4 on a float model are clear errors."""
    import kqrobust as kq

    (x_train, _), (x_test, _) = digits
    np.save(tmp_path / "calib.npy", x_train[:64])
    np.save(tmp_path / "x.npy", x_test[:50])
    common = [f"--representative={tmp_path / 'calib.npy'}", f"--verify_data={tmp_path / 'x.npy'}"]
    results = _load_script().main(
        [
            saved_w4_model,
            f"--tflite={tmp_path / 'w4.tflite'}",
            f"--onnx={tmp_path / 'w4.onnx'}",
            "--weight_dtype=int4",
            *common,
        ]
    )
    out = capsys.readouterr().out
    assert "INT4 layers: conv2, dw, pw;" in out
    assert "INT4" in out and "CPU kernels and GPU delegates" in out
    assert results["tflite"].num_samples == 50 and "onnx" in results
    _load_script().main(
        [saved_w4_model, f"--tflite={tmp_path / 'a16.tflite'}", "--activation_dtype=int16", *common]
    )
    types = kq.export.tensor_types(str(tmp_path / "a16.tflite"), constant=False)
    assert set(types.values()) == {"INT16"}
    with pytest.raises(SystemExit, match="--activation_dtype int16 is a TFLite mode"):
        _load_script().main(
            [saved_w4_model, f"--onnx={tmp_path / 'x.onnx'}", "--activation_dtype=int16", *common]
        )


def test_int4_on_a_float_model_is_an_error(saved_model, tmp_path):
    with pytest.raises(ValueError, match=r"weight_dtype='int4'.*has none"):
        _load_script().main(
            [saved_model, f"--tflite={tmp_path / 'm.tflite'}", "--weight_dtype=int4"]
        )
