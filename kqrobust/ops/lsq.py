"""LSQ: learned step size quantization (Esser et al., ICLR 2020).

Formulas: docs/methods.md#lsq.
"""

import contextlib
import threading

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


IMPLEMENTATIONS = ("auto", "kernel", "fused", "reference")

_EXACT = threading.local()


@contextlib.contextmanager
def exact_derivatives():
    """Traces LSQ quantizers on a path whose derivatives are exact in every autodiff mode.

    `lsq_quantize(..., implementation="auto")` (what every kqrobust quantizer
    calls) picks, when it is traced:
      - outside this context, `"kernel"`: TF's fused kernels, the fastest
        path, exact to first order (training, SAM/ASAM, PTQ, the gradient
        and sharpness probes) and for nested `tf.GradientTape`s, but not for
        `tf.autodiff.ForwardAccumulator`, which differentiates the kernels'
        own registered gradients (`FakeQuantWithMinMaxArgsGradient` has none);
      - inside it, `"fused"`: the same values and gradients with a forward
        pass whose ops forward-mode autodiff differentiates exactly.

    The Hessian probes (`kq.probes`, `kq.callbacks`) enter it around the
    functions they trace. Enter it yourself around code that takes
    forward-mode derivatives through a quantized model, e.g. a
    forward-over-reverse Hessian-vector product, when the function is
    traced (a `tf.function` keeps the path it was traced with).
    Thread-local and re-entrant.
    """
    _EXACT.depth = getattr(_EXACT, "depth", 0) + 1
    try:
        yield
    finally:
        _EXACT.depth -= 1


def exact_derivatives_active():
    """Whether the calling thread is inside `exact_derivatives()`."""
    return getattr(_EXACT, "depth", 0) > 0


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
        implementation: all compute the same values and the same first
            derivatives. `"kernel"` (per-tensor steps; per-channel ones
            take `"fused"`) runs TF's fused kernels, `u = x / s`, then
            `QuantizeAndDequantizeV2` and `FakeQuantWithMinMaxArgsGradient`
            in code space: 7 element-wise passes and 1 reduction; its
            second derivatives are exact under nested tapes, not under
            `tf.autodiff.ForwardAccumulator`. `"fused"` is a
            `tf.custom_gradient` whose second derivatives are exact in both
            modes: 10 passes and 1 reduction. `"reference"` is the plain
            `keras.ops` composition (about 16 passes). `"auto"` (default)
            is `"kernel"` on the TensorFlow backend, `"fused"` inside
            `exact_derivatives()`, `"reference"` on other backends. On an
            unsigned grid without offset, the kernel and fused paths
            quantize the input of a ReLU that computed `x` (its lower clip;
            `relu_input`), so a traced step skips the ReLU.

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
    if implementation == "auto":
        if keras.backend.backend() != "tensorflow":
            implementation = "reference"
        else:
            implementation = "fused" if exact_derivatives_active() else "kernel"
    x = ops.convert_to_tensor(x)
    if qn == 0 and offset is None and implementation != "reference":
        z = relu_input(x)
        x = x if z is None else z
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
    if implementation == "kernel" and _fusable(x, step) and _per_tensor(step):
        x_hat = _kernel_lsq(x, tf.convert_to_tensor(step), qn, qp)
    elif implementation != "reference" and _fusable(x, step):
        x_hat = _fused_lsq(x, tf.convert_to_tensor(step), qn, qp)
    else:
        code = round_ste(ops.clip(x / step, -float(qn), float(qp)))
        x_hat = code * step
    if offset is not None:
        x_hat = x_hat + offset
    return ops.cast(x_hat, dtype)


def relu_input(x):
    """The input of the `Relu` op that computed the graph tensor `x`, or None.

    An unsigned grid clips at 0 as the ReLU does, so quantizing the ReLU's
    input gives the same values (`round(clip(max(z, 0) / s, 0, Qp)) =
    round(clip(z / s, 0, Qp))` for `s > 0`), and the ReLU and its gradient
    drop out of the traced step when nothing else reads its output (TFLite
    likewise runs a ReLU as the clamp of its producer's requantization).
    `dx` then differs from the ReLU's only where its input is exactly 0:
    the clip passes the gradient there, `ReluGrad` does not. Eager tensors
    have no producing op: None.
    """
    try:
        op = x.op
    except AttributeError:  # eager
        return None
    return op.inputs[0] if op.type == "Relu" else None


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


def _per_tensor(step):
    """One step for the whole tensor (every dimension of `step` is 1)."""
    return all(d == 1 for d in step.shape)


def _kernel_lsq(x, step, qn, qp):
    """LSQ's forward and gradients on TF's fused kernels, per-tensor step.

    Forward, 3 element-wise passes: `u = x / s` (the reference's division,
    so ties land where its do), `code = QuantizeAndDequantizeV2(u)` over
    `[-Qn, Qp]` with `HALF_TO_EVEN` (scale exactly 1: `round(clip(u))`,
    `_kernel_grid`), `x_hat = code * s`.

    Backward, 4 passes and 1 reduction, from the saved `u` and `code`: `dx =
    dy * inside` and `ds = sum(dy * (code - u * inside))`, LSQ's `d x_hat /
    ds` per element in one sum: the rounding residual inside, `-Qn` below
    and `Qp` above (Esser et al., ICLR 2020, eq. 3). Both masks are one
    `FakeQuantWithMinMaxArgsGradient` pass over `[-Qn, Qp]` (`_clip_mask`):
    its range is static in code space, and with the scale exactly 1 its
    nudged range is exactly that range, boundaries inside.

    Second derivatives by nested tapes are exact: the backward is linear in
    `dy`, `code - u * inside` has zero derivative in `x` and `s` (`x_hat`
    is piecewise linear in both), and the mask's own gradient is the mask.
    Forward-mode autodiff differentiates the kernels' registered gradients
    instead (`QuantizeAndDequantizeV2`'s is the identity, without the clip
    mask; the mask kernel has none), so it would be wrong here:
    `exact_derivatives()` switches `"auto"` to `_fused_lsq` for it.
    """
    step_shape = tuple(step.shape)
    low, high = tf.constant(-float(qn)), tf.constant(float(qp))
    num_bits, signed, narrow = _kernel_grid(qn, qp)

    @tf.custom_gradient
    def fake_quant(x, s):
        u = x / s
        code = tf.raw_ops.QuantizeAndDequantizeV2(
            input=u,
            input_min=low,
            input_max=high,
            signed_input=signed,
            num_bits=num_bits,
            range_given=True,
            round_mode="HALF_TO_EVEN",
            narrow_range=narrow,
        )

        def grad(dy):
            u_fixed = tf.stop_gradient(u)  # the masks have no derivative in u
            d_step = tf.stop_gradient(code - _clip_mask(u_fixed, u_fixed, qn, qp))
            dx = _clip_mask(dy, u_fixed, qn, qp)
            return dx, tf.reshape(tf.reduce_sum(dy * d_step), step_shape)

        return code * s, grad

    return fake_quant(x, step)


def _clip_mask(g, u, qn, qp):
    """`g * (-Qn <= u <= Qp)` in one kernel pass (`FakeQuantWithMinMaxArgsGradient`).

    The kernel has no registered derivative; this is its own, so nested
    tapes see the linear map it is: the same mask on the incoming gradient,
    and none in `u` (a straight-through mask).
    """
    num_bits, _, narrow = _kernel_grid(qn, qp)

    def mask(t):
        return tf.raw_ops.FakeQuantWithMinMaxArgsGradient(
            gradients=t,
            inputs=u,
            min=-float(qn),
            max=float(qp),
            num_bits=num_bits,
            narrow_range=narrow,
        )

    @tf.custom_gradient
    def masked(g):
        return mask(g), mask

    return masked(g)
