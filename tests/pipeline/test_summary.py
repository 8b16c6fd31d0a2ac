"""The demo summary says what each number measures (format_summary)."""

from kqrobust.pipeline.job import format_summary


def summary(activation_bits, export=True):
    result = {
        "recipe": "fpq",
        "bits": f"4A{activation_bits}",
        "float_accuracy": 0.9861,
        "qat_accuracy": 0.9833,
        "config": {"activation_bits": activation_bits},
        "seconds": 120.0,
        "out_dir": "runs/demo",
    }
    if export:
        result["export"] = {
            "tflite": {"keras_accuracy": 0.9777, "runtime_accuracy": 0.9805, "agreement": 0.997},
            "onnx": {"keras_accuracy": 0.9833, "runtime_accuracy": 0.9833, "agreement": 1.0},
            "edgetpu_compatible": True,
        }
    return result


def test_exports_are_compared_with_their_export_graphs():
    text = format_summary(summary(4))
    assert "| model | test accuracy | same prediction as its export graph |" in text
    assert "| QAT (fpq, W4A4) in Keras | 98.33% |  |" in text
    assert "| TFLite export graph in Keras (8-bit activations) | 97.77% |  |" in text
    assert "| tflite int8 in LiteRT | 98.05% | 99.7% of inputs |" in text
    assert "| ONNX export graph in Keras (8-bit activations) | 98.33% |  |" in text
    assert "| onnx int8 in onnxruntime | 98.33% | 100.0% of inputs |" in text


def test_sub_8_bit_activations_are_said_to_be_exported_at_8_bits():
    text = " ".join(format_summary(summary(4)).split())
    assert "The exports run activations at 8 bits, not the 4 bits of QAT" in text
    assert "255 steps instead of 15" in text
    assert "not against the QAT model" in text
    assert "activations at 8 bits" not in format_summary(summary(8))
    assert "activations at 8 bits" not in format_summary(summary(4, export=False))
