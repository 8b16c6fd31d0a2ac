"""kq.load_model / kq.save_model: kqrobust's classes load; bad files get a clear message."""

import subprocess
import sys

import keras
import numpy as np
import pytest

import kqrobust as kq


def _qmodel():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    return kq.quantize_model(
        model, weight_bits=4, activation_bits=4, calibration_data=np.ones((8, 4), "float32")
    )


def test_round_trip_in_a_fresh_process(tmp_path):
    path = tmp_path / "sub" / "q.keras"
    qmodel = _qmodel()
    kq.save_model(qmodel, path)
    assert [p.name for p in path.parent.iterdir()] == ["q.keras"]
    code = (
        "import sys, kqrobust as kq; m = kq.load_model(sys.argv[1]); "
        "print(type(m).__name__, m.recipe.name)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-2:] == ["QuantModel", "lsq"]
    np.testing.assert_allclose(
        kq.load_model(path).predict(np.ones((2, 4)), verbose=0),
        qmodel.predict(np.ones((2, 4)), verbose=0),
    )


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No model file at '.*nothing.keras'. Fix"):
        kq.load_model(tmp_path / "nothing.keras")
    path = tmp_path / "q.keras"
    kq.save_model(_qmodel(), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"q.keras' is not a complete .keras file.*200 bytes"):
        kq.load_model(path)
