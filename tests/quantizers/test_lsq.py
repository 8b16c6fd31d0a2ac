"""The LSQ and FixedRange quantizers: init, levels, idempotence, positivity, serialization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kqrobust import quantizers
from kqrobust.testing import TestCase


def built(quantizer, shape):
    host = keras.layers.Layer(name="host")
    return quantizer.build(shape, "t", host), host


class LSQTest(TestCase):
    def test_weight_step_initialises_per_channel_from_mean_abs(self):
        w = np.random.default_rng(0).normal(size=(3, 3, 4, 6)).astype("float32")
        q = quantizers.LSQ(bits=4, channel_axis=-1)
        weights, _ = built(q, w.shape)
        self.assertFalse(q.is_initialized(weights))
        q.initialize(w, weights)
        self.assertTrue(q.is_initialized(weights))
        expected = 2 * np.abs(w).reshape(-1, 6).mean(0) / np.sqrt(7)
        self.assertAllClose(weights["step"].numpy(), expected, rtol=1e-5)
        self.assertEqual(float(weights["initialized"].numpy()), 1.0)

    def test_minmax_step_init_is_the_smallest_grid_holding_the_range(self):
        x = np.random.default_rng(1).normal(size=(16, 5, 7)).astype("float32")
        for signed, narrow in ((True, False), (True, True), (False, False)):
            q = quantizers.LSQ(bits=8, signed=signed, narrow_range=narrow, step_init="minmax")
            qn = 0 if not signed else (127 if narrow else 128)
            qp = 127 if signed else 255
            expected = x.max() / qp if not qn else max(x.max() / qp, -x.min() / qn)
            self.assertAllClose(q.initial_step(x), expected, rtol=1e-6)
        # "auto", the default: the range for 8-bit activations, LSQ's rule otherwise.
        mean_abs = 2 * np.abs(x).mean() / np.sqrt(127)
        auto = quantizers.LSQ(bits=8, narrow_range=False, per_sample=True)
        self.assertAllClose(auto.initial_step(x), max(x.max() / 127, -x.min() / 128), rtol=1e-6)
        self.assertAllClose(quantizers.LSQ(bits=8).initial_step(x), mean_abs, rtol=1e-5)
        four_bits = quantizers.LSQ(bits=4, per_sample=True)
        self.assertAllClose(four_bits.initial_step(x), 2 * np.abs(x).mean() / np.sqrt(7), rtol=1e-5)
        copy = quantizers.get(quantizers.serialize(q))
        self.assertEqual(copy.step_init, "minmax")
        with self.assertRaisesRegex(ValueError, "step_init must be one of"):
            quantizers.LSQ(step_init="max")

    def test_activation_step_initialises_once_from_first_batch(self):
        q = quantizers.LSQ(bits=4, signed=False, per_sample=True)
        weights, _ = built(q, (None, 10))
        x1 = np.abs(np.random.default_rng(1).normal(size=(8, 10))).astype("float32")
        q(x1, weights, training=True)
        first = weights["step"].numpy().copy()
        self.assertAllClose(first, 2 * np.abs(x1).mean() / np.sqrt(15), rtol=1e-5)
        q(10 * x1, weights, training=True)
        self.assertAllClose(weights["step"].numpy(), first)

    def test_inference_never_writes_a_variable(self):
        q = quantizers.LSQ(bits=4, signed=False, per_sample=True)
        weights, _ = built(q, (None, 10))
        x = np.abs(np.random.default_rng(1).normal(size=(8, 10))).astype("float32")
        before = {k: v.numpy().copy() for k, v in weights.items()}
        q(x, weights, training=False)
        for key, value in before.items():
            np.testing.assert_array_equal(weights[key].numpy(), value)
        self.assertFalse(q.is_initialized(weights))

    def test_depthwise_steps_cover_trailing_two_axes(self):
        w = np.random.default_rng(2).normal(size=(3, 3, 4, 2)).astype("float32")
        q = quantizers.LSQ(bits=4, channel_axis=(-2, -1))
        weights, _ = built(q, w.shape)
        y = q(w, weights).numpy()
        self.assertEqual(weights["step"].shape, (4, 2))
        for i in range(4):
            for j in range(2):
                codes = y[:, :, i, j] / weights["step"].numpy()[i, j]
                self.assertAllClose(codes, np.round(codes), atol=1e-4)

    def test_idempotent_and_at_most_2_pow_b_levels(self):
        for bits in (2, 3, 4, 8):
            for signed in (True, False):
                q = quantizers.LSQ(bits=bits, signed=signed, narrow_range=False, per_sample=True)
                weights, _ = built(q, (None, 1000))
                x = np.random.default_rng(bits).normal(size=(4, 1000)).astype("float32") * 3
                once = q(x, weights).numpy()
                twice = q(once, weights).numpy()
                self.assertAllClose(twice, once, atol=1e-6)
                self.assertLessEqual(len(np.unique(once)), 2**bits)

    def test_step_stays_positive_when_adam_pushes_it_down(self):
        """A loss rewarding a smaller step drives plain LSQ below zero; ours stays >= min_step."""
        q = quantizers.LSQ(bits=2, min_step=1e-4)
        layer = keras.layers.Layer()
        weights = q.build((16,), "w", layer)
        x = tf.constant(np.linspace(-1, 1, 16).astype("float32"))
        q(x, weights)
        opt = keras.optimizers.Adam(learning_rate=1.0)
        step = weights["step"]
        for _ in range(20):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(q(x, weights, training=True) * tf.sign(x)) + 10 * step.value
            grads = tape.gradient(loss, [step.value])
            opt.apply(grads, [step])
            self.assertGreaterEqual(step.numpy(), np.float32(1e-4))
            self.assertTrue(np.isfinite(q(x, weights).numpy()).all())
        # Unconstrained, 20 Adam steps of size ~1 would have taken it far below 0.
        self.assertEqual(step.numpy(), np.float32(1e-4))

    def test_quantization_range_spans_the_grid(self):
        q = quantizers.LSQ(bits=4, channel_axis=-1)  # LSQ's full 4-bit grid [-8, 7]
        weights, _ = built(q, (2, 3))
        weights["step"].assign([0.1, 0.2, 0.3])
        lo, hi = q.quantization_range(weights)
        self.assertAllClose(lo, [-0.8, -1.6, -2.4])
        self.assertAllClose(hi, [0.7, 1.4, 2.1])

    def test_fixed_range_step_is_not_trainable(self):
        q = quantizers.FixedRange(bits=4)
        weights, host = built(q, (5,))
        self.assertFalse(weights["step"].trainable)
        self.assertEqual(host.trainable_weights, [])

    def test_invalid_arguments_raise_clear_errors(self):
        with self.assertRaisesRegex(
            ValueError, r"bits must be an int in \[2, 8\]. Received: bits=9"
        ):
            quantizers.LSQ(bits=9)
        with self.assertRaisesRegex(
            ValueError, r"min_step must be a positive number. Received: min_step=0.0. Fix: "
        ):
            quantizers.LSQ(min_step=0.0)
        with self.assertRaisesRegex(ValueError, "trailing axes"):
            quantizers.LSQ(channel_axis=(-3, -1))

    def test_serialization_round_trips(self):
        for q in (
            quantizers.LSQ(bits=3, signed=False, per_sample=True, learn_offset=True),
            quantizers.LSQ(bits=4, channel_axis=(-2, -1)),
            quantizers.FixedRange(bits=5, channel_axis=-1),
            quantizers.MinMax(bits=6, ema_decay=0.9, symmetric=True),
        ):
            revived = self.run_serialization_test(q)
            self.assertEqual(revived, q)
            self.assertEqual(quantizers.deserialize(quantizers.serialize(q)), q)


@pytest.mark.parametrize(
    "identifier,cls",
    [
        ("lsq", quantizers.LSQ),
        ("LSQ", quantizers.LSQ),
        ("fixed_range", quantizers.FixedRange),
        ("minmax", quantizers.MinMax),
        ("ema_minmax", quantizers.MinMax),
        (
            {
                "class_name": "LSQ",
                "config": {"bits": 3},
                "module": None,
                "registered_name": "kqrobust>LSQ",
            },
            quantizers.LSQ,
        ),
    ],
)
def test_registry_get_accepts_names_dicts_instances(identifier, cls):
    q = quantizers.get(identifier)
    assert type(q) is cls
    assert quantizers.get(q) is q


def test_registry_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="Unknown quantizer: 'lsqq'. Known quantizers: .*'lsq'"):
        quantizers.get("lsqq")
    with pytest.raises(ValueError, match="Received: 3"):
        quantizers.get(3)
