"""Tests of the peer benchmark (`benchmarks/peers.py` and `benchmarks/peers/`).

The fast tests check the pieces (weights by name, LiteRT I/O, the step-time
summary, the report, the flags). The slow ones run the script end to end in a
tiny configuration so it cannot rot: the Keras 3 side always (CI has `.venv`),
the tfmot side only where an interpreter with tfmot and tf_keras exists
(`.venv-peer`, made by `make bench-peers`, or `KQ_TFMOT_PYTHON`); otherwise
that test is skipped and says why.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH = os.path.join(ROOT, "benchmarks")


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = _load("kq_bench_peers", os.path.join(BENCH, "peers.py"))
report, shared = peers.report, peers.shared
litert_eval = _load("kq_bench_peers_litert", os.path.join(BENCH, "peers", "litert_eval.py"))
TFMOT_PYTHON = os.environ.get("KQ_TFMOT_PYTHON", peers.DEFAULT_TFMOT_PYTHON)
TINY = [
    "--epochs",
    "1",
    "--float_epochs",
    "2",
    "--repeats",
    "2",
    "--rounds",
    "1",
    "--latency_runs",
    "3",
    "--archs",
    "small_cnn",
    "--ptq_methods",
    "aciq_laplace",
    "--ptq_bits",
    "w4a8",
]


def test_weights_by_name_round_trip(tmp_path):
    source = kq.testing.small_cnn(seed=1)
    target = kq.testing.small_cnn(seed=2)
    path = str(tmp_path / "w.npz")
    shared.save_weights_by_name(source, path)
    shared.load_weights_by_name(target, path)
    x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
    np.testing.assert_array_equal(np.asarray(source(x)), np.asarray(target(x)))


def test_weights_by_name_rejects_another_architecture(tmp_path):
    path = str(tmp_path / "w.npz")
    shared.save_weights_by_name(kq.testing.small_cnn(width=16), path)
    with pytest.raises(ValueError, match="does not match the saved float weights"):
        shared.load_weights_by_name(kq.testing.small_cnn(width=8), path)


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_litert_input_quantization_matches_numpy(dtype):
    scale, zero_point = 0.05, (-3 if dtype == np.int8 else 120)
    detail = {"dtype": dtype, "quantization": (scale, zero_point)}
    x = np.linspace(-10, 10, 101).astype("float32")
    info = np.iinfo(dtype)
    expected = np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)
    q = litert_eval._to_input(detail, x)
    np.testing.assert_array_equal(q, expected)
    np.testing.assert_allclose(
        litert_eval._from_output(detail, q),
        (expected.astype("float32") - zero_point) * scale,
        rtol=1e-6,
    )


def test_litert_measure_runs_a_float_model(tmp_path):
    model = kq.testing.small_cnn()
    x = np.random.default_rng(0).random((20, 8, 8, 1)).astype("float32")
    y = np.argmax(np.asarray(model(x)), axis=-1)
    path = tmp_path / "m.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    row = litert_eval.measure(str(path), x[:1], x, y, runs=3)
    assert row["io"] == "float32/float32"
    assert row["accuracy"] == 1.0  # LiteRT agrees with Keras on every argmax
    assert row["size_kb"] == pytest.approx(os.path.getsize(path) / 1024)
    assert row["latency_ms"] > 0


@pytest.mark.parametrize(
    "kq_qat, tfmot_qat", [([30.0, 10.0, 20.0], [10.0, 40.0, 20.0]), ([5.0], [10.0])]
)
def test_step_time_summary_is_ratio_of_medians(kq_qat, tfmot_qat):
    kq_runs = [{"ms_per_step": {"float": 1.0, "qat": v}} for v in kq_qat]
    tfmot_runs = [{"ms_per_step": {"float": 2.0, "qat": v}} for v in tfmot_qat]
    summary = report.step_time_summary(kq_runs, tfmot_runs)
    assert summary["ratio_qat"] == pytest.approx(np.median(kq_qat) / np.median(tfmot_qat))
    assert summary["ratio_float"] == pytest.approx(0.5)
    assert summary["kq_overhead"] == pytest.approx(np.median(kq_qat))  # float steps are 1 ms
    assert summary["ratio_overhead"] == pytest.approx(
        np.median(kq_qat) / np.median(np.array(tfmot_qat) / 2.0)
    )
    assert report.step_time_summary(kq_runs, [])["ratio_qat"] is None


def test_report_marks_a_missed_goal_and_lists_skips():
    results = {
        "machine": "m",
        "skipped": ["tfmot side: no interpreter"],
        "float_accuracy": 0.9,
        "config": {"epochs": 1, "batch_size": 8},
        "digits": {
            "kq_lsq_w8a8": {
                "keras_accuracy": 0.5,
                "fit_seconds": 1.0,
                "tflite": {"error": "E: boom"},
            }
        },
        "step_time": {
            "small_cnn": dict(
                report.step_time_summary(
                    [{"ms_per_step": {"float": 1.0, "qat": 3.0}}],
                    [{"ms_per_step": {"float": 1.0, "qat": 2.0}}],
                ),
                batch_size=8,
            )
        },
        "tflite": {"small_cnn": {"kq_lsq_w8a8": {"tflite": {"error": "E: boom"}}}},
    }
    text = report.markdown(results)
    assert "**Skipped:** tfmot side: no interpreter" in text
    assert "| 1.50 | **not met** | 2.00 | 3.00 | 1.50 |" in text
    assert "| tfmot default 8-bit QAT (tf_keras) | skipped |" in text
    assert "export failed: E: boom" in text


@pytest.mark.parametrize("flag", ["--epochs", "--rounds", "--repeats"])
def test_flags_must_be_positive(flag, capsys):
    with pytest.raises(SystemExit):
        peers.parse_args([flag, "0"])
    assert f"Received: {flag}=0" in capsys.readouterr().err


@pytest.mark.parametrize("bits", ["w4", "w1a8", "w4a9", "4/8"])
def test_ptq_bits_are_checked(bits, capsys):
    with pytest.raises(SystemExit):
        peers.parse_args(["--ptq_bits", bits])
    assert f"Received: --ptq_bits={bits}" in capsys.readouterr().err


def test_missing_tfmot_interpreter_is_named(tmp_path):
    missing = str(tmp_path / "no-python")
    assert missing in peers.tfmot_unavailable(missing)


def _run_peers(out_dir, *flags):
    subprocess.run(
        [
            sys.executable,
            os.path.join(BENCH, "peers.py"),
            "--out_dir",
            str(out_dir),
            "--kq_python",
            sys.executable,
            *TINY,
            *flags,
        ],
        check=True,
        cwd=ROOT,
        timeout=1200,
    )
    with open(out_dir / "results.json") as f:
        return json.load(f), (out_dir / "results.md").read_text()


@pytest.mark.slow
@pytest.mark.ci
def test_kqrobust_side_end_to_end(tmp_path):
    """The whole script with the tfmot side switched off (as on a machine without .venv-peer)."""
    results, text = _run_peers(tmp_path, "--tfmot_python", str(tmp_path / "no-python"))
    assert any("tfmot side" in reason for reason in results["skipped"])
    digits = results["digits"]
    assert "kq_ptq_minmax_w4a8" not in digits  # --ptq_methods aciq_laplace only
    for name in [
        "kq_lsq_w8a8",
        "kq_ptq_aciq_laplace_w4a8",
        "kq_robust_ptq_aciq_laplace_w4a8",
        "keras_quantize_int8",
        "keras_quantize_int4",
    ]:
        assert 0.0 <= digits[name]["keras_accuracy"] <= 1.0, name
    tflite = digits["tflite_ptq_w8a8"]["tflite"]
    assert tflite["io"] == "int8/int8" and tflite["accuracy"] > 0.1
    if not any("kq.export" in reason for reason in results["skipped"]):
        assert digits["kq_lsq_w8a8"]["tflite"]["io"] == "int8/int8"
    timing = results["step_time"]["small_cnn"]
    assert timing["kq_qat_ms"] > 0 and timing["ratio_qat"] is None
    assert "kqrobust LSQ W8A8" in text and "**Skipped:** tfmot side" in text


@pytest.mark.slow
@pytest.mark.ci
def test_tfmot_side_end_to_end(tmp_path):
    reason = peers.tfmot_unavailable(TFMOT_PYTHON)
    if reason:
        pytest.skip(f"tfmot side not run: {reason}")
    results, text = _run_peers(tmp_path, "--tfmot_python", TFMOT_PYTHON, "--require_tfmot")
    assert not [r for r in results["skipped"] if "tfmot" in r]
    row = results["digits"]["tfmot_qat_w8a8"]
    assert row["tflite"]["io"] == "int8/int8"
    assert abs(row["tflite"]["accuracy"] - row["keras_accuracy"]) < 0.05
    assert results["step_time"]["small_cnn"]["ratio_qat"] > 0
    assert "tfmot default 8-bit QAT (tf_keras)" in text


@pytest.mark.slow
@pytest.mark.parametrize("command", ["time", "export"])
def test_kqrobust_side_resnet20(tmp_path, command):
    out = tmp_path / "out.json"
    subprocess.run(
        [
            sys.executable,
            os.path.join(BENCH, "peers", "kqrobust_side.py"),
            command,
            "--arch",
            "resnet20",
            "--batch_size",
            "8",
            "--repeats",
            "2",
            "--latency_runs",
            "2",
            "--work_dir",
            str(tmp_path),
            "--out",
            str(out),
        ],
        check=True,
        timeout=900,
    )
    result = json.loads(out.read_text())
    if command == "time":
        assert result["params"] == kq.models.resnet20().count_params()
        assert set(result["ms_per_step"]) == {"float", "qat"}
    else:
        assert result["rows"]["tflite_ptq_w8a8"]["tflite"]["io"] == "int8/int8"
        assert (
            result["rows"]["float_fp32"]["tflite"]["size_kb"]
            > 3 * (result["rows"]["tflite_ptq_w8a8"]["tflite"]["size_kb"])
        )
