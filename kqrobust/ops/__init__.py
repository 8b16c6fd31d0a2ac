"""Pure quantization math in `keras.ops`: no state, straight-through gradients."""

from kqrobust.ops.fake_quant import fake_quant_min_max
from kqrobust.ops.fake_quant import nudged_range
from kqrobust.ops.lsq import exact_derivatives
from kqrobust.ops.lsq import exact_derivatives_active
from kqrobust.ops.lsq import lsq_quantize
from kqrobust.ops.lsq import quant_levels
from kqrobust.ops.rounding import round_ste
from kqrobust.ops.rounding import scale_gradient

__all__ = [
    "exact_derivatives",
    "exact_derivatives_active",
    "fake_quant_min_max",
    "lsq_quantize",
    "nudged_range",
    "quant_levels",
    "round_ste",
    "scale_gradient",
]
