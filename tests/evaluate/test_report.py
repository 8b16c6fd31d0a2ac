"""robustness_report writes Markdown, JSON with every number, and PNG plots."""

import json
import os

import numpy as np
import pytest

from kqrobust import evaluate
from kqrobust.evaluate.report import PLOTS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report(trained_cnn, qat_cnn, digits, tmp_path_factory):
    (x_train, _), (x, y) = digits
    out_dir = str(tmp_path_factory.mktemp("report"))
    result = evaluate.robustness_report(
        {"baseline": trained_cnn, "qat": qat_cnn},
        (x[:200], y[:200]),
        out_dir,
        calibration_data=x_train[:64],
        weight_bits=[8, 2],
        activation_bits=[None, 4],
        step_factors=[0.9, 1.0, 1.1],
        analysis_bits=2,
        verbose=0,
    )
    return out_dir, result


def test_files_are_written(report):
    out_dir, _ = report
    files = set(os.listdir(out_dir))
    assert {"report.md", "report.json"} <= files
    for name in PLOTS:
        with open(os.path.join(out_dir, name), "rb") as f:
            assert f.read(8) == PNG_MAGIC, name


def test_json_holds_every_number(report, trained_cnn, digits):
    out_dir, result = report
    with open(os.path.join(out_dir, "report.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(json.dumps(result))
    assert saved["models"]["baseline"]["method"] == "aciq_laplace"
    assert saved["models"]["qat"]["method"] == "rescale"
    labels = [r["label"] for r in saved["bitwidth"]["baseline"]]
    assert labels == ["FP", "8/FP", "2/4"]
    _, (x, y) = digits
    fp = np.mean(np.argmax(trained_cnn.predict(x[:200], verbose=0), -1) == y[:200])
    assert saved["bitwidth"]["baseline"][0]["accuracy"] == pytest.approx(fp)
    assert [r["factor"] for r in saved["step_size"]["qat"]] == [0.9, 1.0, 1.1]
    # 2-bit weights: LSQ's full grid, 4 levels (not ternary).
    assert [r["level"] for r in saved["level_sensitivity"]["baseline"]["levels"]] == [-2, -1, 0, 1]
    assert [r["layer"] for r in saved["error_propagation"]["qat"]] == [
        "stem",
        "dw",
        "pw",
        "conv2",
        "logits",
    ]
    assert set(saved["output_variance"]["baseline"]) == {"float", "quantized"}
    assert set(saved["weights"]["qat"]["layers"]) == {"stem", "dw", "pw", "conv2", "logits"}
    assert saved["setup"]["calibration"] == "64 given samples"


def test_markdown_has_the_tables(report):
    out_dir, result = report
    with open(os.path.join(out_dir, "report.md")) as f:
        text = f.read()
    assert "| model | FP | 8/FP | 2/4 |" in text
    baseline = result["bitwidth"]["baseline"]
    assert (
        "| baseline | " + " | ".join(f"{100 * r['accuracy']:.2f}" for r in baseline) + " |" in text
    )
    for heading in (
        "Step-size robustness",
        "Error propagation",
        "Single-level sensitivity",
        "Output variance",
        "symmetry and saturation",
    ):
        assert heading in text
    assert "![kl_per_layer.png](kl_per_layer.png)" in text


def test_rejects_no_models(digits, tmp_path):
    with pytest.raises(ValueError, match="at least one model"):
        evaluate.robustness_report({}, digits[1], str(tmp_path))


def test_qat_model_is_swept_with_its_own_activation_quantizers(
    trained_cnn, qat_cnn, digits, tmp_path
):
    """Default `activation_bits="trained"`: every label is what was measured."""
    (x_train, _), (x, y) = digits
    x, y = x[:200], y[:200]
    result = evaluate.robustness_report(
        {"baseline": trained_cnn, "qat": qat_cnn},
        (x, y),
        str(tmp_path),
        calibration_data=x_train[:64],
        weight_bits=[8, 4],
        step_factors=[1.0],
        analysis_bits=2,
        verbose=0,
    )
    assert [r["label"] for r in result["bitwidth"]["baseline"]] == ["FP", "8/FP", "4/FP"]
    assert [r["label"] for r in result["bitwidth"]["qat"]] == ["FP", "8/4", "4/4"]
    assert result["models"]["qat"]["trained_bits"] == [4, 4]
    assert result["models"]["baseline"]["trained_bits"] is None
    # At its own bit-widths the QAT model scores what it scores as trained.
    as_trained = np.mean(np.argmax(qat_cnn.predict(x, verbose=0), -1) == y)
    assert result["bitwidth"]["qat"][2]["accuracy"] == pytest.approx(as_trained, abs=1.01 / 200)
    with open(tmp_path / "report.md") as f:
        text = f.read()
    assert "| model | activations | FP | W8 | W4 |" in text
    assert "| qat | 4 bits, its trained quantizers | " in text
    assert "| baseline | float | " in text
    assert "FP: no quantizer" in text and "qat was trained at W4A4" in text


def test_trained_bits(trained_cnn, qat_cnn):
    from kqrobust.evaluate.bitwidth import trained_bits

    assert (trained_bits(qat_cnn, "kernel"), trained_bits(qat_cnn, "input")) == (4, 4)
    assert trained_bits(trained_cnn, "kernel") is None
