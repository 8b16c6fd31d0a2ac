"""The MinMax quantizer against TF's FakeQuant ops and its EMA update rule."""

import keras
import numpy as np
import tensorflow as tf

from kqrobust import quantizers
from kqrobust.testing import TestCase


class MinMaxTest(TestCase):
    def test_last_value_per_channel_matches_tf_fake_quant(self):
        w = np.random.default_rng(0).normal(size=(3, 3, 2, 4)).astype("float32")
        q = quantizers.MinMax(bits=8, narrow_range=True, channel_axis=-1, symmetric=True)
        y = q(w, q.build(w.shape, "k", keras.layers.Layer())).numpy()
        m = np.abs(w).reshape(-1, 4).max(0)
        expected = (
            tf.quantization.fake_quant_with_min_max_vars_per_channel(
                w.reshape(-1, 4), -m, m, 8, True
            )
            .numpy()
            .reshape(w.shape)
        )
        np.testing.assert_array_equal(y, expected)

    def test_ema_range_follows_the_update_rule(self):
        q = quantizers.MinMax(bits=8, signed=True, ema_decay=0.9, per_sample=True)
        weights = q.build((None, 5), "a", keras.layers.Layer())
        rng = np.random.default_rng(1)
        x1, x2 = (rng.normal(size=(4, 5)).astype("float32") for _ in range(2))
        q(x1, weights, training=True)
        self.assertAllClose(weights["min"].numpy(), min(x1.min(), 0.0))
        q(x2, weights, training=True)
        self.assertAllClose(
            weights["min"].numpy(), 0.9 * min(x1.min(), 0) + 0.1 * min(x2.min(), 0), rtol=1e-5
        )
        self.assertAllClose(weights["max"].numpy(), 0.9 * x1.max() + 0.1 * x2.max(), rtol=1e-5)
        # Inference does not move the range and quantizes with it.
        before = weights["max"].numpy().copy()
        y = q(3 * x2, weights, training=False).numpy()
        self.assertAllClose(weights["max"].numpy(), before)
        expected = tf.quantization.fake_quant_with_min_max_vars(
            3 * x2, weights["min"].numpy(), weights["max"].numpy(), 8
        ).numpy()
        np.testing.assert_array_equal(y, expected)

    def test_bad_decay_raises(self):
        with self.assertRaisesRegex(ValueError, "ema_decay must be None or in"):
            quantizers.MinMax(ema_decay=1.5)


def test_symmetric_low_bit_weights_use_the_full_grid():
    """Below 8 bits a symmetric signed MinMax uses LSQ's full grid: 4 bits are
    codes -8..7 with s = max(max(w)/7, -min(w)/8), 2 bits {-2, -1, 0, 1}."""
    rng = np.random.default_rng(2)
    for bits in (2, 4):
        qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        w = (rng.uniform(-qn, qp, (200, 3)) * [0.1, 0.5, 2.0]).astype("float32")
        q = quantizers.MinMax(bits=bits, narrow_range=True, channel_axis=-1, symmetric=True)
        y = q(w, q.build(w.shape, "k", keras.layers.Layer())).numpy()
        step = np.maximum(w.max(0) / qp, -w.min(0) / qn)
        codes = y / step
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
        np.testing.assert_allclose(codes, np.clip(np.round(w / step), -qn, qp), atol=1e-4)
        assert sorted(np.unique(np.round(codes)).astype(int)) == list(range(-qn, qp + 1))
