"""FakeQuant ranges at export, from each quantizer's `quantization_range`.

TF's FakeQuant nudges `[min, max]` so that 0.0 is representable; the scale is
`(max - min) / (2^8 - 1)` (`/ 254` with narrow range). The ranges chosen
here make the nudged 8-bit grid equal the quantizer's grid:

- activations, LSQ `[-Qn*s, Qp*s]` at `b` bits: `[min, max]` unchanged at 8
  bits. At 8 bits `Qn + Qp = 255`, so the scale is exactly `s` and the zero
  point `Qn` is an integer: the grids are equal. Below 8 bits the same clip
  range is split into 255 steps (TFLite has no sub-8-bit activations); the
  `b`-bit grid is a subset of it when `2^b - 1` divides 255 (2, 4, 8 bits).
- weights, LSQ's signed grid `[-Qn*s, Qp*s]` (the full `[-2^(b-1),
  2^(b-1) - 1]` below 8 bits, `[-127, 127]` at 8 bits with narrow range):
  `[-127*s/k, 127*s/k]`, narrow range, with the integer `k = floor(127 /
  max(Qn, Qp))` (`code_multiplier`: 1 at 8 bits, 15 at 4 bits, 63 at 2
  bits). The int8 scale is `s/k` and the int8 weights are exactly `k *
  codes` (at most `Qn + Qp + 1` values per channel; a folded BatchNorm with
  a negative scale flips their signs, which stays inside `[-127, 127]`).
  The kernel computes with exactly the trained weights `codes * s`, and the
  int32 bias, whose scale the TFLite specification fixes to `s_in * s/k`, is
  `k` times finer than with scale `s` (with `k = 1` the bias rounding costs
  up to `s_in * s / 2`, a large share of the output step for a depthwise
  layer's 9 taps). Conv2D kernels carry this range as a FakeQuant; Dense and
  DepthwiseConv2D kernels get it written into the `.tflite` after conversion
  (`tflite_weights.py`).
- biases, in the full-integer graph: on the int32 grid `s_in * s/k` that
  the TFLite specification gives a bias (`int32_bias`). The converter rounds
  every bias to it; the export graph rounds it the same way, so it computes
  what the integer model computes.
"""

import numpy as np

from kqrobust.ops.lsq import quant_levels

INT8_NARROW_MAX = 127


def _quantizer_range(quantizer, weights, x=None):
    """`quantizer.quantization_range(weights, x)` as float64 arrays, or None."""
    result = quantizer.quantization_range(weights, x=x)
    if result is None:
        return None
    lo, hi = result
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
            f"of shape {lo.shape} from {quantizer!r}"
        )
    lo, hi = float(lo.reshape(())), float(hi.reshape(()))
    return min(lo, 0.0), max(hi, 0.0)


def weight_step(quantizer, weights, kernel):
    """The per-channel step `s` of a weight grid whose codes are int8 weights.

    The grid must be signed, have zero on a code and codes within int8's
    narrow range `[-127, 127]`: LSQ / FixedRange grids without an offset
    (every bit-width below 8, and 8 bits with narrow range) and symmetric
    `MinMax` grids. The step is the quantizer's own (`max(step, min_step)`,
    what its forward pass uses), or for a quantizer without one the step of
    its range `[-Qn*s, Qp*s]`.

    Args:
        quantizer: the layer's kernel quantizer.
        weights: its variables (`layer.kernel_quantizer_weights`).
        kernel: the transformed kernel the quantizer sees (for quantizers
            whose range comes from the tensor, like `MinMax`).

    Returns:
        A float64 array with the step's shape (one per channel), or None
        for other grids (an asymmetric min-max range, an LSQ+ offset, 8-bit
        codes down to -128): such kernels are stored quantized and
        re-quantized by the converter.
    """
    if not quantizer.signed:
        return None
    qn, qp = quantizer.levels
    if max(qn, qp) > INT8_NARROW_MAX:
        return None
    if quantizer.has_step:
        if quantizer.offset(weights) is not None:
            return None
        return np.asarray(quantizer.effective_step(weights), np.float64)
    result = _quantizer_range(quantizer, weights, x=kernel)
    if result is None:
        return None
    lo, hi = result
    step = (hi - lo) / (qn + qp)
    if not np.allclose(lo, -qn * step, rtol=1e-6, atol=0.0):
        return None
    return step


def code_multiplier(quantizer):
    """`k = floor(127 / max(Qn, Qp))`: the int8 weights are `k * codes`.

    The largest integer that keeps every code, and its negative (a folded
    BatchNorm flips signs), inside int8's narrow range `[-127, 127]`.
    """
    qn, qp = quant_levels(quantizer.bits, True, quantizer.narrow_range)
    return INT8_NARROW_MAX // max(qn, qp)


def tame_free_steps(step, kernel):
    """Sets the step of every channel whose codes are all 0 to the layer's median.

    Such a channel computes 0 whatever its step, so the step is free; but
    training can leave it huge (a channel switched off by a BatchNorm scale
    near 0, say), and the requantization multiplier `s_in * s_w / s_out` it
    gives is then out of the range integer kernels accept (XNNPACK fails to
    prepare the model). The exported model computes exactly the same.

    Args:
        step: per-output-channel steps `(C,)` of a kernel `(..., C)`, or
            `(in, multiplier)` of a depthwise kernel `(kh, kw, in,
            multiplier)`.
        kernel: the transformed kernel the quantizer sees.

    Returns:
        The steps as a flat `(C,)` array in the kernel's channel order
        (depthwise: `in * multiplier + j`), those of all-zero channels
        replaced.
    """
    step = np.asarray(step, np.float64).reshape(-1).copy()
    channel_max = np.abs(np.asarray(kernel, np.float64)).reshape(-1, step.size).max(axis=0)
    free = channel_max <= 0.5 * step  # round(|w| / s) == 0 for every weight
    if free.any() and not free.all():
        step[free] = np.median(step[~free])
    return step


def int8_scale(value_range):
    """The scale of TF's 8-bit FakeQuant over `(min, max)`: `(max - min) / 255`,
    in float32 as TF's FakeQuant kernel and LiteRT compute it."""
    lo, hi = np.float32(value_range[0]), np.float32(value_range[1])
    return float(np.float32((hi - lo) / np.float32(255)))


def int32_bias(bias, input_range, kernel_range):
    """A bias rounded to its int32 grid: `round(b_c / (s_in * t_c)) * s_in * t_c`.

    The TFLite int8 specification stores the bias of a Conv2D,
    DepthwiseConv2D or FullyConnected op as int32 with the scale `s_in *
    t_c` (`t_c` the channel's int8 weight scale); the converter (and
    `tflite_weights.py`) round the float bias to that grid. The error, up to
    `s_in * t_c / 2`, is a sizeable share of an output step when `s_in * t_c
    / s_out` is large (measured up to 0.22 output steps in a first layer),
    and each output that it moves across a rounding boundary differs by a
    whole step. The export graph therefore carries the rounded bias.

    Args:
        bias: the layer's float bias `(C,)`.
        input_range: `(min, max)` of the 8-bit FakeQuant of the layer's input.
        kernel_range: `(mins, maxs)` of the layer's narrow-range per-channel
            kernel range (`kernel_range`): `t_c = maxs_c / 127`.

    Returns:
        A float32 array `(C,)`.
    """
    weight_scale = np.float32(np.abs(np.asarray(kernel_range[1], np.float64)) / INT8_NARROW_MAX)
    bias_step = np.float64(int8_scale(input_range)) * weight_scale.astype(np.float64)
    shape = np.shape(bias)  # (C,), or the channel axes' shape (EinsumDense: (heads, dim))
    bias = np.asarray(bias, np.float64).reshape(-1)
    safe_step = np.where(bias_step > 0, bias_step, 1.0)
    rounded = np.round(bias / safe_step) * safe_step
    return np.where(bias_step > 0, rounded, bias).astype(np.float32).reshape(shape)  # no grid: kept


def _channels_first(kernel, channel_axes):
    """`kernel` as `(channels, -1)`: its output-channel axes first, flattened."""
    axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
    axes = sorted(a % kernel.ndim for a in axes)
    moved = np.moveaxis(kernel, axes, list(range(len(axes))))
    return moved.reshape(int(np.prod([kernel.shape[a] for a in axes])), -1)


def converter_step(kernel, channel_axes):
    """The per-channel int8 scale the TFLite converter gives a float kernel:
    `max|w_c| / 127` (symmetric, narrow range), 1 for an all-zero channel."""
    peak = np.abs(_channels_first(np.asarray(kernel, np.float64), channel_axes)).max(axis=1)
    return np.where(peak > 0, peak / INT8_NARROW_MAX, 1.0)


def on_grid(kernel, step, channel_axes):
    """`round(w / s_c) * s_c` for the per-channel `step` along `channel_axes`."""
    kernel = np.asarray(kernel, np.float64)
    axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
    axes = sorted(a % kernel.ndim for a in axes)
    shape = [1] * kernel.ndim
    for axis in axes:
        shape[axis] = kernel.shape[axis]
    step = np.asarray(step, np.float64).reshape(shape)
    return (np.round(kernel / step) * step).astype(np.float32)


def kernel_range(step):
    """`(mins, maxs)` of the 8-bit narrow-range per-channel kernel FakeQuant
    whose scale is `step`: `[-127 * step, 127 * step]`."""
    step = np.abs(np.asarray(step, np.float64)).reshape(-1)
    return -INT8_NARROW_MAX * step, INT8_NARROW_MAX * step


def on_constant_grid(values):
    """`values` (a constant operand of an int8 MUL / ADD) on the grid the
    converter stores it on: one asymmetric 8-bit scale for the tensor over
    `[min(values, 0), max(values, 0)]`, scale `(max - min) / 255` and the
    zero point rounded into `[-128, 127]`, as TF's FakeQuant nudges it.

    The export graph computes with these values, so its products and sums
    are the int8 model's (LayerNormalization's gamma and beta, say).
    """
    values = np.asarray(values, np.float32)
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    if high - low <= 0:
        return values
    scale = np.float32((high - low) / 255.0)
    zero_point = np.clip(np.round(-128.0 - low / scale), -128, 127)
    codes = np.clip(np.round(values / scale) + zero_point, -128, 127)
    return ((codes - zero_point) * scale).astype(np.float32)
