"""LSQ: learned step size quantization (Esser et al., ICLR 2020).

Formulas: docs/methods.md#lsq.
"""

import keras
import tensorflow as tf
from keras import ops

from kqrobust import validation
from kqrobust.ops.rounding import round_ste
from kqrobust.ops.rounding import scale_gradient


def quant_levels(bits, signed=True, narrow_range=True):
    """Returns `(Qn, Qp)`, the integer grid is `[-Qn, Qp]`.

    Signed: `Qn = 2^(b-1)`, `Qp = 2^(b-1) - 1`, the full grid LSQ trains (4
    levels at 2 bits). `narrow_range` keeps the codes inside int8's narrow
    range `[-127, 127]` (TFLite int8 weights): it drops the code -128 at 8
    bits (`Qn = Qp = 127`) and changes nothing below 8 bits, where the full
    grid already fits.
    Unsigned: `Qn = 0`, `Qp = 2^b - 1` (narrow range does not apply).

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020, sec. 2.
        TensorFlow Lite 8-bit quantization specification (int8 weights in
        `[-127, 127]`).
    """
    validation.int_in_range(bits, "bits", 2, 8)
    if signed:
        qp = 2 ** (bits - 1) - 1
        qn = min(qp + 1, 127) if narrow_range else qp + 1
        return qn, qp
    return 0, 2**bits - 1


IMPLEMENTATIONS = ("auto", "fused", "reference")


def lsq_quantize(
    x,
    step,
    bits,
    signed=True,
    narrow_range=True,
    grad_scale=1.0,
    offset=None,
    implementation="auto",
):
    """Fake-quantizes `x` on the LSQ grid with straight-through gradients.

    Forward (Esser et al., ICLR 2020, eq. 1): `x_hat = round(clip((x - beta) / s, -Qn, Qp)) * s
    + beta`, with `beta = offset` (LSQ+) or 0.

    Gradients:
      - `d x_hat / d x = 1` inside `[-Qn*s, Qp*s]`, 0 outside;
      - `d x_hat / d s = round(x/s) - x/s` inside, `-Qn` below, `Qp` above,
        multiplied by `grad_scale` (LSQ's `g = 1/sqrt(N*Qp)`).

    Args:
        x: tensor to quantize.
        step: positive step size `s`, broadcastable to `x` (a scalar per
            tensor or one value per channel).
        bits: int in [2, 8].
        signed: signed grid (weights, signed activations) or unsigned
            (activations after ReLU).
        narrow_range: for signed grids, keep the codes inside int8's
            symmetric `[-127, 127]` (TFLite int8 weights): drops -128 at 8
            bits; below 8 bits LSQ's full grid already fits.
        grad_scale: LSQ gradient scale `g` applied to the gradient of `step`
            (and of `offset`).
        offset: optional learned offset `beta` (LSQ+), broadcastable to `x`.
        implementation: `"fused"` computes the same values and the same
            first and second derivatives with a `tf.custom_gradient` and
            TF's `QuantizeAndDequantizeV2` kernel in code space: 10
            element-wise passes and 1 reduction instead of about 16;
            `"reference"` is the plain `keras.ops` composition; `"auto"`
            (default) is `"fused"` on the TensorFlow backend.

    Returns:
        The quantized tensor, same shape and dtype as `x`. The arithmetic
        runs in float32 whatever the dtype of `x` (under a `mixed_float16`
        policy too): in float16 the division by a small step overflows, and
        the step's gradient, a sum over the whole tensor, loses its
        precision or becomes NaN under loss scaling.

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. 1-3.
        Bhalgat et al., "LSQ+", CVPR-W 2020 (the offset).
    """
    qn, qp = quant_levels(bits, signed, narrow_range)
    validation.one_of(implementation, "implementation", IMPLEMENTATIONS)
    fused = implementation == "fused" or (
        implementation == "auto" and keras.backend.backend() == "tensorflow"
    )
    x = ops.convert_to_tensor(x)
    dtype = x.dtype
    x = ops.cast(x, "float32")
    step = ops.cast(step, "float32")
    scaled = not (isinstance(grad_scale, (int, float)) and grad_scale == 1.0)
    if scaled:
        step = scale_gradient(step, ops.cast(grad_scale, "float32"))
    if offset is not None:
        offset = ops.cast(offset, "float32")
        if scaled:
            offset = scale_gradient(offset, ops.cast(grad_scale, "float32"))
        x = x - offset
    if fused and _fusable(x, step):
        x_hat = _fused_lsq(x, tf.convert_to_tensor(step), qn, qp)
    else:
        code = round_ste(ops.clip(x / step, -float(qn), float(qp)))
        x_hat = code * step
    if offset is not None:
        x_hat = x_hat + offset
    return ops.cast(x_hat, dtype)


def _fusable(x, step):
    """The fused path needs a static rank and a step that broadcasts to `x`'s shape."""
    x_shape, step_shape = tf.TensorShape(x.shape), tf.TensorShape(step.shape)
    if x_shape.rank is None or not step_shape.is_fully_defined():
        return False
    if step_shape.rank > x_shape.rank:
        return False
    trailing = x_shape[x_shape.rank - step_shape.rank :]
    return all(d == 1 or d == n for d, n in zip(step_shape, trailing))


def _sum_to_step(t, step_shape):
    """Sums `t` (shaped as `x`) over the axes `step` was broadcast along."""
    rank, k = t.shape.rank, len(step_shape)
    axes = list(range(rank - k)) + [rank - k + i for i, d in enumerate(step_shape) if d == 1]
    return tf.reshape(tf.reduce_sum(t, axis=axes), step_shape)


def _kernel_grid(qn, qp):
    """`(num_bits, signed, narrow_range)` whose integer grid is exactly `[-Qn, Qp]`.

    `QuantizeAndDequantizeV2` given the range `[-Qn, Qp]` then computes its
    scale as `Qn / Qn` or `Qp / Qp`, exactly 1: the kernel is
    `round_half_to_even(clip(u, -Qn, Qp))` with no other arithmetic.
    """
    if qn == 0:  # unsigned: [0, 2^b - 1]
        return (qp + 1).bit_length() - 1, False, False
    if qn == qp:  # signed narrow range: [-(2^(b-1) - 1), 2^(b-1) - 1]
        return (qp + 1).bit_length(), True, True
    return qn.bit_length(), True, False  # signed full range: [-2^(b-1), 2^(b-1) - 1]


def _fused_lsq(x, step, qn, qp):
    """LSQ's forward and gradients (Esser et al., ICLR 2020, eq. 1-3), fused.

    Forward, in code space, in 4 element-wise passes (the reference takes
    7): `u = x / s`, `c = ClipByValue(u, -Qn, Qp)`, `code =
    QuantizeAndDequantizeV2(c)` over the range `[-Qn, Qp]` with
    `HALF_TO_EVEN`, `x_hat = code * s`. The kernel's scale is exactly 1
    (`_kernel_grid`), so it is `round(c)` with ties to even, and the values
    agree with the reference's bit for bit, ties and clip boundaries
    included (the division is the reference's own; a kernel in `x` space
    would multiply by a rounded `1/s` and move ties).

    Backward, from the saved `u`, `c` and `code`, in 6 element-wise passes
    (2 of them the mask) and 1 reduction instead of about 12: `dx = dy *
    inside` and `ds = sum(dy * (code - inside * u))`, i.e.
    `sum(dy * (x_hat - x * inside)) / s`, with `inside = (c == u)`. Summing
    `code - u` (exact where they are close) instead of subtracting two sums
    makes `ds` more accurate in float32 than the reference's.

    Second derivatives stay exact, whichever way they are taken:
      - nested tapes differentiate the backward, which is linear in `dy`;
        `inside` and `code - inside * u` have zero derivative in `x` and
        `s`, as in the reference (`x_hat` is piecewise linear in `(x, s)`);
      - `tf.autodiff.ForwardAccumulator` ignores `tf.custom_gradient` (in
        a `tf.function` and eagerly): it differentiates the forward ops
        themselves, so their registered derivatives must be the
        reference's. They are: `ClipByValue`'s is the clip mask, and
        `QuantizeAndDequantizeV2`'s is the identity (the straight-through
        estimator of `round_ste`), both linear and differentiable again.
        TF's `FakeQuant*` and `QuantizeAndDequantizeV4` kernels are not
        used: their gradient kernels have no registered derivative or a
        wrong one (`QuantizeAndDequantizeV4Grad`'s reads the wrong inputs),
        which gave a zero block in forward-over-reverse `Hv`.
    """
    step_shape = tuple(step.shape)
    low, high = tf.constant(-float(qn)), tf.constant(float(qp))
    num_bits, signed, narrow = _kernel_grid(qn, qp)

    @tf.custom_gradient
    def fake_quant(x, s):
        u = x / s
        c = tf.raw_ops.ClipByValue(t=u, clip_value_min=low, clip_value_max=high)
        code = tf.raw_ops.QuantizeAndDequantizeV2(
            input=c,
            input_min=low,
            input_max=high,
            signed_input=signed,
            num_bits=num_bits,
            range_given=True,
            round_mode="HALF_TO_EVEN",
            narrow_range=narrow,
        )

        def grad(dy):
            inside = tf.stop_gradient(tf.cast(tf.equal(c, u), dy.dtype))
            # d x_hat / ds = code - inside * u: exact (code and u are close
            # inside the range), and with zero derivative in x and s.
            d_step = tf.stop_gradient(code - inside * u)
            return dy * inside, _sum_to_step(dy * d_step, step_shape)

        return code * s, grad

    return fake_quant(x, step)
