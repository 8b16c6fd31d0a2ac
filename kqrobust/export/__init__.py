"""Export: BN folding, full-integer TFLite and ONNX, verification, Edge TPU check."""

from kqrobust.export.graph import export_model
from kqrobust.export.onnx import to_onnx
from kqrobust.export.runtime import ONNXRunner
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.tflite import to_tflite
from kqrobust.export.verify import VerificationResult
from kqrobust.export.verify import verify

__all__ = [
    "ONNXRunner",
    "TFLiteRunner",
    "VerificationResult",
    "export_model",
    "to_onnx",
    "to_tflite",
    "verify",
]
