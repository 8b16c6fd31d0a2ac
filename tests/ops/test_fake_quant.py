"""kq.ops.fake_quant_min_max reproduces TF's FakeQuant ops bit for bit."""

import numpy as np
import pytest
import tensorflow as tf

from kqrobust import ops as kops

RANGES = [(-1.0, 1.0), (-0.7, 2.3), (0.0, 6.0), (0.1, 0.9), (-2.4, -0.3), (-0.127, 0.127)]


def inputs():
    rng = np.random.default_rng(0)
    return np.concatenate([np.linspace(-3, 3, 4001), rng.normal(size=4000) * 2]).astype("float32")


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("narrow", [False, True])
def test_per_tensor_is_bit_exact(bits, narrow):
    x = inputs()
    for lo, hi in RANGES:
        ours = kops.fake_quant_min_max(x, lo, hi, bits, narrow).numpy()
        theirs = tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, bits, narrow).numpy()
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("narrow", [False, True])
def test_per_channel_is_bit_exact(bits, narrow):
    x = np.tile(inputs()[:, None], (1, len(RANGES)))
    lo = np.array([r[0] for r in RANGES], "float32")
    hi = np.array([r[1] for r in RANGES], "float32")
    ours = kops.fake_quant_min_max(x, lo, hi, bits, narrow).numpy()
    theirs = tf.quantization.fake_quant_with_min_max_vars_per_channel(
        x, lo, hi, bits, narrow
    ).numpy()
    np.testing.assert_array_equal(ours, theirs)


def test_nudged_range_matches_numpy():
    # Nudging by hand: scale, zero point rounded and clamped, range moved.
    lo, hi, bits = -0.65, 2.3, 8  # zero point 56.2: no float32 tie
    scale = (hi - lo) / 255
    zp = np.floor(np.clip(0 - lo / scale, 0, 255) + 0.5)
    n_lo, n_hi, n_scale = (t.numpy() for t in kops.nudged_range(lo, hi, bits))
    np.testing.assert_allclose(
        [n_lo, n_hi, n_scale], [-zp * scale, (255 - zp) * scale, scale], rtol=1e-6
    )
    assert n_lo <= 0 <= n_hi


def test_gradient_is_straight_through_inside_the_range():
    x = tf.constant(np.linspace(-2, 3, 501).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kops.fake_quant_min_max(x, -1.0, 2.0)
    grad = tape.gradient(y, x).numpy()
    n_lo, n_hi, _ = (t.numpy() for t in kops.nudged_range(-1.0, 2.0))
    inside = (x.numpy() >= n_lo) & (x.numpy() <= n_hi)
    np.testing.assert_allclose(grad, inside.astype("float32"), atol=1e-5)
