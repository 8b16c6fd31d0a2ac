"""Export: BN folding, full-integer TFLite and ONNX, verification, Edge TPU check."""

from kqrobust.export.edgetpu import EdgeTPUReport
from kqrobust.export.edgetpu import check_edgetpu
from kqrobust.export.graph import export_model
from kqrobust.export.onnx import to_onnx
from kqrobust.export.runtime import ONNXRunner
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.summary import tensor_types
from kqrobust.export.summary import weight_summary
from kqrobust.export.tflite import to_tflite
from kqrobust.export.verify import VerificationResult
from kqrobust.export.verify import verify

__all__ = [
    "EdgeTPUReport",
    "ONNXRunner",
    "TFLiteRunner",
    "VerificationResult",
    "check_edgetpu",
    "export_model",
    "to_onnx",
    "tensor_types",
    "to_tflite",
    "verify",
    "weight_summary",
]
