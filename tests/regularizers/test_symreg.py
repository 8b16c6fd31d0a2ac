"""SymReg against a NumPy transcription of docs/methods.md#symreg (values and gradients)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.regularizers import symmetry_losses
from kqrobust.testing import TestCase

# (shape, channel_axis): odd N, N not divisible by 4, several channels.
SHAPES = [
    ((3, 3, 1, 4), -1),  # N = 9 (odd, N % 4 = 1)
    ((7, 3), -1),  # N = 7 (odd, N % 4 = 3)
    ((3, 2, 1, 5), -1),  # N = 6 (even, N % 4 = 2)
    ((2, 2, 2, 6), -1),  # N = 8
    ((3, 3, 4, 2), (-2, -1)),  # depthwise: 8 channels of N = 9
]


def np_channels(kernel, channel_axis):
    axes = (channel_axis,) if isinstance(channel_axis, int) else channel_axis
    axes = sorted(a % kernel.ndim for a in axes)
    others = [a for a in range(kernel.ndim) if a not in axes]
    channels = int(np.prod([kernel.shape[a] for a in axes]))
    return np.transpose(kernel, axes + others).reshape(channels, -1)


def np_symreg(kernel, channel_axis=-1):
    """`(L_sym1, L_sym2, dL_sym1/dW, dL_sym2/dW)` with 1-based loops as in docs/methods.md."""
    per_channel = np_channels(kernel.astype(np.float64), channel_axis)
    c_count, n = per_channel.shape
    sym1 = sym2 = 0.0
    grad1 = np.zeros_like(per_channel)
    grad2 = np.zeros_like(per_channel)
    for c in range(c_count):
        order = np.argsort(per_channel[c])
        w = per_channel[c][order]

        def at(i, w=w):  # 1-based order statistic
            return w[i - 1]

        for i in range(1, n // 2 + 1):
            s = at(i) + at(n + 1 - i)
            sym1 += abs(s)
            for j in (i, n + 1 - i):
                grad1[c, order[j - 1]] += np.sign(s)
        for i in range(1, n // 4 + 1):
            idx = (2 * i - 1, 2 * i, n - 2 * i + 2, n - 2 * i + 1)
            s = sum(at(j) for j in idx)
            sym2 += abs(s)
            for j in idx:
                grad2[c, order[j - 1]] += np.sign(s)
    scale1, scale2 = 2.0 / (c_count * n), 4.0 / (c_count * n)

    def back(g):  # (C, N) -> kernel layout
        axes = (channel_axis,) if isinstance(channel_axis, int) else channel_axis
        axes = sorted(a % kernel.ndim for a in axes)
        others = [a for a in range(kernel.ndim) if a not in axes]
        perm = axes + others
        shaped = g.reshape([kernel.shape[a] for a in perm])
        return np.transpose(shaped, np.argsort(perm))

    return scale1 * sym1, scale2 * sym2, scale1 * back(grad1), scale2 * back(grad2)


@pytest.mark.parametrize("shape,channel_axis", SHAPES)
def test_values_match_numpy(shape, channel_axis):
    kernel = np.random.default_rng(0).normal(0.1, 0.5, shape).astype("float32")
    sym1, sym2 = symmetry_losses(kernel, channel_axis)
    ref1, ref2, _, _ = np_symreg(kernel, channel_axis)
    np.testing.assert_allclose(float(sym1), ref1, rtol=1e-5)
    np.testing.assert_allclose(float(sym2), ref2, rtol=1e-5)
    assert ref1 > 0 and ref2 > 0


@pytest.mark.parametrize("shape,channel_axis", SHAPES)
@pytest.mark.parametrize("lambdas", [(0.1, 0.1), (1.0, 0.0), (0.0, 2.5)])
def test_regularizer_and_gradient_match_numpy(shape, channel_axis, lambdas):
    kernel = np.random.default_rng(1).normal(-0.2, 1.0, shape).astype("float32")
    reg = kq.regularizers.SymReg(*lambdas, channel_axis=channel_axis)
    variable = tf.Variable(kernel)
    with tf.GradientTape() as tape:
        value = reg(variable)
    grad = tape.gradient(value, variable).numpy()
    ref1, ref2, g1, g2 = np_symreg(kernel, channel_axis)
    np.testing.assert_allclose(float(value), lambdas[0] * ref1 + lambdas[1] * ref2, rtol=1e-5)
    np.testing.assert_allclose(grad, lambdas[0] * g1 + lambdas[1] * g2, rtol=1e-5, atol=1e-7)


def test_symmetric_channels_have_zero_loss():
    half = np.random.default_rng(2).uniform(0.1, 1.0, (8, 3)).astype("float32")
    kernel = np.concatenate([half, -half], axis=0)  # N = 16, each channel symmetric
    sym1, sym2 = symmetry_losses(kernel)
    assert float(sym1) == pytest.approx(0.0, abs=1e-7)
    assert float(sym2) == pytest.approx(0.0, abs=1e-7)


def test_one_sort_per_kernel():
    graph = (
        tf.function(lambda k: symmetry_losses(k, -1))
        .get_concrete_function(tf.TensorSpec((3, 3, 8, 16), tf.float32))
        .graph
    )
    sorts = [op for op in graph.get_operations() if op.type in ("TopKV2", "Sort")]
    assert len(sorts) == 1


def test_serialization_and_plain_keras_use(digits):
    reg = TestCase().run_serialization_test(kq.regularizers.SymReg(0.2, 0.3, (-2, -1)))
    assert reg.channel_axis == (-2, -1)
    layer = keras.layers.Dense(4, kernel_regularizer=kq.regularizers.SymReg(0.1, 0.1))
    layer.build((None, 7))
    assert len(layer.losses) == 1
    ref1, ref2, _, _ = np_symreg(layer.kernel.numpy())
    np.testing.assert_allclose(float(layer.losses[0]), 0.1 * ref1 + 0.1 * ref2, rtol=1e-5)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"lambda1": -1.0}, "lambda1 must be a float >= 0. Received: lambda1=-1.0"),
        ({"lambda2": "x"}, "lambda2 must be a float >= 0"),
        ({"channel_axis": "last"}, "channel_axis must be an int or a tuple"),
    ],
)
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        kq.regularizers.SymReg(**bad)


def test_registry():
    assert isinstance(kq.regularizers.get("symreg"), kq.regularizers.SymReg)
    assert isinstance(kq.regularizers.get("kure"), kq.regularizers.KURE)
    reg = kq.regularizers.get(kq.regularizers.serialize(kq.regularizers.SymReg(0.5, 0.25)))
    assert reg.get_config()["lambda1"] == 0.5
    assert isinstance(kq.regularizers.get("l2"), keras.regularizers.L2)
    with pytest.raises(ValueError, match="Unknown regularizer: 'nope'"):
        kq.regularizers.get("nope")
