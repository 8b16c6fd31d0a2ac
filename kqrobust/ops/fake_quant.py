"""A `keras.ops` fake-quant with min/max that reproduces TF's FakeQuant nudging.

Used for export parity: what the Keras model computes with it is bit-exact what
`tf.quantization.fake_quant_with_min_max_vars` computes, which is what the
TFLite converter turns into integer kernels.
"""

from keras import ops


def nudged_range(min_value, max_value, bits=8, narrow_range=False):
    """Returns `(nudged_min, nudged_max, scale)` as TF's FakeQuant computes them.

    The range is moved so that 0.0 is exactly representable: `scale = (max -
    min) / (quant_max - quant_min)`, zero point `round(quant_min - min/scale)`
    clamped to the integer range, then `nudged_min = (quant_min - zp) * scale`.
    """
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = float(2**bits - 1)
    min_value = ops.convert_to_tensor(min_value, "float32")
    max_value = ops.convert_to_tensor(max_value, "float32")
    scale = (max_value - min_value) / (quant_max - quant_min)
    zero_point_from_min = quant_min - min_value / scale
    nudged_zero_point = ops.floor(ops.clip(zero_point_from_min, quant_min, quant_max) + 0.5)
    nudged_min = (quant_min - nudged_zero_point) * scale
    nudged_max = (quant_max - nudged_zero_point) * scale
    return nudged_min, nudged_max, scale


def fake_quant_min_max(x, min_value, max_value, bits=8, narrow_range=False):
    """Fake-quantizes `x` to `[min, max]` exactly as TF's FakeQuant ops do.

    Forward, in TF's order of float operations (so results agree bit for bit,
    ties included): clamp to the nudged range, then
    `floor((x - nudged_min) * inv_scale - zero + 0.5) * scale` with `zero =
    floor(-nudged_min * inv_scale + 0.5)` (TF rounds half up here, not half to
    even). Gradient with respect to `x`: 1 inside the nudged range, 0 outside
    (straight-through). `min_value`/`max_value` broadcast against `x` (per
    channel on the last axis, as `..._per_channel`).
    """
    x = ops.convert_to_tensor(x)
    quant_min = 1.0 if narrow_range else 0.0
    quant_max = float(2**bits - 1)
    nudged_min, nudged_max, scale = nudged_range(min_value, max_value, bits, narrow_range)
    min_value = ops.convert_to_tensor(min_value, "float32")
    max_value = ops.convert_to_tensor(max_value, "float32")
    inv_scale = (quant_max - quant_min) / (max_value - min_value)
    nudged_min, nudged_max, scale, inv_scale = (
        ops.cast(t, x.dtype) for t in (nudged_min, nudged_max, scale, inv_scale)
    )
    zero = ops.floor(-nudged_min * inv_scale + 0.5)
    clamped = ops.minimum(ops.maximum(x, nudged_min), nudged_max)
    if len(ops.shape(min_value)) == 0:
        # FakeQuantWithMinMaxVars divides; the per-channel and args kernels
        # multiply by the separately computed inverse scale.
        shifted = (clamped - nudged_min) / scale - zero + 0.5
    else:
        shifted = (clamped - nudged_min) * inv_scale - zero + 0.5
    code = shifted + ops.stop_gradient(ops.floor(shifted) - shifted)
    return code * scale
