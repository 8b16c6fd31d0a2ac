"""FakeQuant ranges at export, from each quantizer's `quantization_range`.

TF's FakeQuant nudges `[min, max]` so that 0.0 is representable; the scale is
`(max - min) / (2^8 - 1)` (`/ 254` with narrow range). The ranges chosen
here make the nudged 8-bit grid equal the quantizer's grid:

- activations, LSQ `[-Qn*s, Qp*s]` at `b` bits: `[min, max]` unchanged at 8
  bits. At 8 bits `Qn + Qp = 255`, so the scale is exactly `s` and the zero
  point `Qn` is an integer: the grids are equal. Below 8 bits the same clip
  range is split into 255 steps (TFLite has no sub-8-bit activations); the
  `b`-bit grid is a subset of it when `2^b - 1` divides 255 (2, 4, 8 bits).
- Conv2D weights, symmetric narrow-range grid `[-Qp*s, Qp*s]` at `b` bits:
  `[-127*s, 127*s]`, narrow range, so the scale is exactly `s` and the int8
  values are the codes themselves (at most `2*Qp + 1` of them).
"""

import inspect

import numpy as np

INT8_NARROW_MAX = 127


def _quantizer_range(quantizer, weights, x=None):
    """`quantizer.quantization_range` with `x` passed when it takes one."""
    params = inspect.signature(quantizer.quantization_range).parameters
    if "x" in params:
        if x is None:
            return None
        lo, hi = quantizer.quantization_range(weights, x=x)
    else:
        lo, hi = quantizer.quantization_range(weights)
    return np.asarray(lo, np.float64), np.asarray(hi, np.float64)


def activation_range(quantizer, weights):
    """The `(min, max)` of an input quantizer's 8-bit export FakeQuant.

    Args:
        quantizer: the layer's input quantizer (per tensor), or None.
        weights: its variables (`layer.input_quantizer_weights`).

    Returns:
        A pair of floats with `min <= 0 <= max` (an LSQ+ range that excludes
        0 is widened to hold it, as TFLite requires), or None when the
        quantizer has no stored range (the tensor's range then comes from the
        representative data).
    """
    if quantizer is None:
        return None
    result = _quantizer_range(quantizer, weights)
    if result is None:
        return None
    lo, hi = result
    if lo.size != 1 or hi.size != 1:
        raise ValueError(
            "Activation quantizers must be per tensor to export. Received: a range "
            f"of shape {lo.shape} from {quantizer!r}")
    lo, hi = float(lo.reshape(())), float(hi.reshape(()))
    return min(lo, 0.0), max(hi, 0.0)


def symmetric_step(quantizer, weights, kernel):
    """The per-channel step `s` of a symmetric narrow-range weight grid.

    Args:
        quantizer: the layer's kernel quantizer.
        weights: its variables (`layer.kernel_quantizer_weights`).
        kernel: the transformed kernel the quantizer sees (for quantizers
            whose range comes from the tensor, like `MinMax`).

    Returns:
        A float64 array with one step per channel, or None when the grid is
        not symmetric with zero at a code (e.g. an asymmetric min-max range):
        such kernels are stored quantized and re-quantized by the converter.
    """
    bits = getattr(quantizer, "bits", None)
    if bits is None or not getattr(quantizer, "narrow_range", False):
        return None
    result = _quantizer_range(quantizer, weights, x=kernel)
    if result is None:
        return None
    lo, hi = result
    if not np.allclose(lo, -hi, rtol=1e-6, atol=0.0):
        return None
    return hi / (2 ** (bits - 1) - 1)


def tame_free_steps(step, kernel):
    """Sets the step of every channel whose codes are all 0 to the layer's median.

    Such a channel computes 0 whatever its step, so the step is free; but
    training can leave it huge (a channel switched off by a BatchNorm scale
    near 0, say), and the requantization multiplier `s_in * s_w / s_out` it
    gives is then out of the range integer kernels accept (XNNPACK fails to
    prepare the model). The exported model computes exactly the same.

    Args:
        step: per-output-channel steps `(C,)` of a kernel `(..., C)`.
        kernel: the transformed kernel the quantizer sees.

    Returns:
        The steps, with those of all-zero channels replaced.
    """
    step = np.asarray(step, np.float64).copy()
    channel_max = np.abs(np.asarray(kernel, np.float64)).reshape(-1, step.size).max(axis=0)
    free = channel_max <= 0.5 * step  # round(|w| / s) == 0 for every weight
    if free.any() and not free.all():
        step[free] = np.median(step[~free])
    return step


def kernel_range(step):
    """`(mins, maxs)` of the 8-bit narrow-range per-channel kernel FakeQuant."""
    step = np.abs(np.asarray(step, np.float64)).reshape(-1)
    return -INT8_NARROW_MAX * step, INT8_NARROW_MAX * step
