"""LSQ: learned step size quantization (Esser et al., ICLR 2020)."""

from keras import ops

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
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(
            f"bits must be an int in [2, 8]. Received: bits={bits!r}"
        )
    if signed:
        qp = 2 ** (bits - 1) - 1
        qn = min(qp + 1, 127) if narrow_range else qp + 1
        return qn, qp
    return 0, 2**bits - 1


def lsq_quantize(
    x, step, bits, signed=True, narrow_range=True, grad_scale=1.0, offset=None
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
    code = round_ste(ops.clip(x / step, -float(qn), float(qp)))
    x_hat = code * step
    if offset is not None:
        x_hat = x_hat + offset
    return ops.cast(x_hat, dtype)
