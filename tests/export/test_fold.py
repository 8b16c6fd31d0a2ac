"""BatchNorm folding and FakeQuant ranges against independent NumPy math."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.export import fold
from kqrobust.export import ranges
from kqrobust.export.layers import FakeQuant
from kqrobust.ops.fake_quant import nudged_range


def _bn_model(layer, input_shape):
    inputs = keras.Input(input_shape)
    bn = keras.layers.BatchNormalization(epsilon=1e-3)
    model = keras.Model(inputs, bn(layer(inputs)))
    rng = np.random.default_rng(0)
    channels = bn.gamma.shape[0]
    bn.set_weights(
        [
            rng.uniform(-2, 2, channels),
            rng.normal(size=channels),
            rng.normal(size=channels),
            rng.uniform(0.1, 3, channels),
        ]
    )
    return model, layer, bn


@pytest.mark.parametrize(
    "make,input_shape",
    [
        (lambda: keras.layers.Conv2D(5, 3, use_bias=True), (6, 6, 3)),
        (lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False), (6, 6, 3)),
        (lambda: keras.layers.Dense(4), (7,)),
    ],
)
def test_fold_batchnorm_matches_keras(make, input_shape):
    model, layer, bn = _bn_model(make(), input_shape)
    x = np.random.default_rng(1).normal(size=(4,) + input_shape).astype(np.float32)
    expected = model.predict(x, verbose=0)
    gamma, beta, mean, var = (np.asarray(w, np.float64) for w in bn.get_weights())
    # BN(z) = a*z + (beta - a*mean): docs/methods.md#batchnorm-folding
    a = gamma / np.sqrt(var + 1e-3)
    scale, shift = fold.batchnorm_scale_shift(bn)
    np.testing.assert_allclose(scale, a, rtol=1e-6)
    np.testing.assert_allclose(shift, beta - a * mean, rtol=1e-6, atol=1e-6)
    bias = np.asarray(layer.bias) if layer.use_bias else None
    kernel, new_bias = fold.fold_batchnorm(
        np.asarray(layer.kernel),
        bias,
        scale,
        shift,
        channel_axes=kq.layers.registry.kernel_channel_axes(layer),
    )
    folded = type(layer).from_config({**layer.get_config(), "use_bias": True})
    folded.build((None,) + input_shape)
    folded.set_weights([kernel, new_bias])
    np.testing.assert_allclose(folded(x), expected, rtol=1e-4, atol=1e-4)


def test_fold_step_rescales_by_abs_scale():
    step = np.array([[0.1, 0.2], [0.3, 0.4]])
    scale = np.array([1.0, -2.0, 0.5, -1.0])
    np.testing.assert_allclose(fold.fold_step(step, scale), [[0.1, 0.4], [0.15, 0.4]])
    np.testing.assert_allclose(fold.fold_step([0.1, 0.2], None), [0.1, 0.2])


def test_fold_channel_mismatch():
    with pytest.raises(ValueError, match="BatchNormalization has 3 channels"):
        fold.fold_batchnorm(np.ones((3, 3, 2, 4)), None, np.ones(3), np.zeros(3))


class _Layer(keras.layers.Layer):
    pass


@pytest.mark.parametrize("bits,signed", [(8, False), (8, True), (4, False), (4, True)])
def test_activation_range_gives_lsq_grid(bits, signed):
    quantizer = kq.quantizers.LSQ(bits=bits, signed=signed, narrow_range=False)
    holder = _Layer()
    weights = quantizer.build((None, 4), "input", holder)
    weights["step"].assign(0.0371)
    lo, hi = ranges.activation_range(quantizer, weights)
    nudged_min, nudged_max, scale = (float(v) for v in nudged_range(lo, hi, 8))
    qn = 2 ** (bits - 1) if signed else 0
    qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    np.testing.assert_allclose([nudged_min, nudged_max], [-qn * 0.0371, qp * 0.0371], rtol=1e-5)
    # 8 bits: the export step is the LSQ step; 4 bits: 17 export steps per LSQ step.
    np.testing.assert_allclose(scale * 255 / (qn + qp), 0.0371, rtol=1e-5)


@pytest.mark.parametrize(
    "bits,narrow,multiplier",
    [(2, True, 63), (3, True, 31), (4, True, 15), (4, False, 15), (8, True, 1)],
)
def test_kernel_range_gives_k_times_the_codes(bits, narrow, multiplier):
    """LSQ's grid [-Qn, Qp] (full below 8 bits) exports as int8 k * codes with
    scale s / k, k = floor(127 / max(Qn, Qp)): TF's narrow-range per-channel
    FakeQuant keeps the kernel exactly, and its int8 values are k * codes,
    sign-flipped codes (a folded negative BatchNorm scale) included."""
    quantizer = kq.quantizers.LSQ(bits=bits, narrow_range=narrow, channel_axis=-1)
    weights = quantizer.build((3, 3, 2, 3), "kernel", _Layer())
    step = np.array([0.1, 0.02, 0.5])
    weights["step"].assign(step)
    np.testing.assert_allclose(ranges.weight_step(quantizer, weights, None), step, rtol=1e-6)
    assert ranges.code_multiplier(quantizer) == multiplier
    qn = 127 if bits == 8 and narrow else 2 ** (bits - 1)
    qp = 2 ** (bits - 1) - 1
    codes = np.random.default_rng(bits).integers(-qn, qp + 1, (3, 3, 2, 3))
    codes[0, 0, 0] = [-qn, qp, -qn]  # both ends occur
    codes[..., 2] *= -1  # a negative BatchNorm scale flips channel 2
    kernel = (codes * step).astype(np.float32)
    lo, hi = ranges.kernel_range(step / multiplier)
    quantized = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, lo.astype(np.float32), hi.astype(np.float32), num_bits=8, narrow_range=True
    )
    np.testing.assert_allclose(quantized, kernel, rtol=1e-6, atol=0)
    _, _, scale = nudged_range(lo, hi, 8, narrow_range=True)
    np.testing.assert_allclose(scale, step / multiplier, rtol=1e-5)
    np.testing.assert_array_equal(np.round(kernel / np.asarray(scale)), multiplier * codes)
    assert np.abs(multiplier * codes).max() <= 127


def test_weight_step_of_the_other_grids():
    """8-bit codes down to -128 and LSQ+ offsets do not embed in int8 weights;
    a symmetric MinMax grid gives s = max(max/Qp, -min/Qn)."""
    wide = kq.quantizers.LSQ(bits=8, narrow_range=False, channel_axis=-1)
    assert ranges.weight_step(wide, wide.build((4, 3), "k", _Layer()), None) is None
    offset = kq.quantizers.LSQ(bits=4, learn_offset=True, channel_axis=-1)
    assert ranges.weight_step(offset, offset.build((4, 3), "k", _Layer()), None) is None
    kernel = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    minmax = kq.quantizers.MinMax(bits=4, narrow_range=True, channel_axis=-1, symmetric=True)
    expected = np.maximum(kernel.max(0) / 7, -kernel.min(0) / 8)
    np.testing.assert_allclose(ranges.weight_step(minmax, {}, kernel), expected, rtol=1e-6)
    assert ranges.code_multiplier(minmax) == 15


def test_asymmetric_weight_grid_has_no_kernel_range():
    quantizer = kq.quantizers.MinMax(bits=8, narrow_range=True, channel_axis=-1)
    kernel = np.random.default_rng(0).uniform(-1, 3, (3, 3)).astype(np.float32)
    assert ranges.weight_step(quantizer, {}, kernel) is None


@pytest.mark.parametrize("lo,hi", [(0.5, 1.0), (-1.0, -0.5), (0.0, 0.0)])
def test_fake_quant_layer_rejects_bad_range(lo, hi):
    with pytest.raises(ValueError, match="min_value <= 0 <= max_value"):
        FakeQuant(lo, hi)


def test_activation_range_holds_zero():
    quantizer = kq.quantizers.LSQ(bits=8, signed=False, learn_offset=True)
    weights = quantizer.build((None, 4), "input", _Layer())
    weights["step"].assign(0.01)
    weights["offset"].assign(0.5)
    lo, hi = ranges.activation_range(quantizer, weights)
    assert lo == 0.0
    np.testing.assert_allclose(hi, 0.5 + 255 * 0.01, rtol=1e-6)


@pytest.mark.parametrize(
    "values",
    [[4.366812, 4.464286, 4.444444], [-2.117904, -2.035714, -1.804444], [1.0 / 255.0], [-0.3, 0.7]],
    ids=["imagenet_scale", "imagenet_offset", "rescaling", "mixed_signs"],
)
def test_constants_sit_on_tfs_8_bit_fake_quant_grid(values):
    """`on_constant_grid` (the MUL/ADD constants of the rewritten Rescaling,
    Normalization and LayerNormalization) is TF's own 8-bit FakeQuant over
    `[min(v, 0), max(v, 0)]`, the range the converter stores the constant on."""
    values = np.asarray(values, np.float32)
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    expected = tf.quantization.fake_quant_with_min_max_args(values, min=low, max=high, num_bits=8)
    np.testing.assert_allclose(ranges.on_constant_grid(values), expected.numpy(), rtol=0, atol=1e-6)
