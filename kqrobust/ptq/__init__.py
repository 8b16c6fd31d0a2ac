"""Post-training quantization: min-max, ACIQ, MSE, AdaQuant/QDrop, bias correction.

`quantize(model, calibration_data, method=...)` returns the same kind of
model `kq.quantize_model` returns, with `FixedRange` quantizers whose steps
are calibrated.
"""

from kqrobust.ptq.aciq import ACIQ_CONSTANTS
from kqrobust.ptq.aciq import aciq_multiplier
from kqrobust.ptq.aciq import expected_quantization_error
from kqrobust.ptq.aciq import optimal_clip_multiplier
from kqrobust.ptq.bias_correction import correct_biases
from kqrobust.ptq.calibrate import calibrate_ranges
from kqrobust.ptq.calibration import calibration_array
from kqrobust.ptq.float_view import float_view
from kqrobust.ptq.quantize import METHODS
from kqrobust.ptq.quantize import quantize
from kqrobust.ptq.quantize import recipe_for
from kqrobust.ptq.ranges import RANGE_RULES
from kqrobust.ptq.reconstruction import Reconstruction
from kqrobust.ptq.reconstruction import reconstruct

__all__ = [
    "ACIQ_CONSTANTS",
    "METHODS",
    "RANGE_RULES",
    "Reconstruction",
    "aciq_multiplier",
    "calibrate_ranges",
    "calibration_array",
    "correct_biases",
    "expected_quantization_error",
    "float_view",
    "optimal_clip_multiplier",
    "quantize",
    "recipe_for",
    "reconstruct",
]
