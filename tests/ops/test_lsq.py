"""kq.ops.lsq_quantize against an independent NumPy implementation of LSQ
(Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. 1-3)."""

import numpy as np
import pytest
import tensorflow as tf

from kqrobust import ops as kops


def np_levels(bits, signed, narrow):
    """LSQ's grid: signed `[-2^(b-1), 2^(b-1) - 1]`; narrow range (TFLite int8
    weights, `[-127, 127]`) only removes -128 at 8 bits."""
    if signed:
        qp = 2 ** (bits - 1) - 1
        return (127 if narrow and bits == 8 else qp + 1), qp
    return 0, 2**bits - 1


def np_lsq(x, s, bits, signed, narrow, g=1.0, beta=0.0):
    """Forward and the STE gradients of LSQ (Esser et al., eq. 1-3), in NumPy."""
    qn, qp = np_levels(bits, signed, narrow)
    v = (x - beta) / s
    inside = (v >= -qn) & (v <= qp)
    x_hat = np.round(np.clip(v, -qn, qp)) * s + beta  # np.round: half to even
    dx = inside.astype(np.float64)
    ds = np.where(inside, np.round(v) - v, np.where(v < -qn, -qn, qp)) * g
    return x_hat, dx, ds


CASES = [
    (b, signed, narrow)
    for b in (2, 3, 4, 8)
    for signed in (True, False)
    for narrow in ((True, False) if signed else (False,))
]


@pytest.mark.parametrize("bits,signed,narrow", CASES)
def test_forward_and_gradients_match_numpy(bits, signed, narrow):
    rng = np.random.default_rng(bits)
    x = rng.normal(size=(512,)).astype("float32") * 2.0
    s = np.float32(0.37)
    g = 1.0 / np.sqrt(512 * np_levels(bits, signed, narrow)[1])
    xt, st = tf.constant(x), tf.Variable(s)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        y = kops.lsq_quantize(xt, st, bits, signed=signed, narrow_range=narrow, grad_scale=g)
    y_np, dx_np, ds_np = np_lsq(x.astype(np.float64), float(s), bits, signed, narrow, g)
    np.testing.assert_allclose(y.numpy(), y_np, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, xt).numpy(), dx_np, atol=1e-6)
    # d sum(y) / ds = sum of the per-element step gradients.
    np.testing.assert_allclose(tape.gradient(y, st).numpy(), ds_np.sum(), rtol=1e-4, atol=1e-4)


def test_gradient_scale_scales_only_the_step_gradient():
    x = tf.constant(np.linspace(-3, 3, 101).astype("float32"))
    step = tf.Variable(0.25)
    grads = []
    for g in (1.0, 0.1):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = tf.reduce_sum(kops.lsq_quantize(x, step, 4, grad_scale=g) ** 2)
        grads.append((tape.gradient(y, x).numpy(), tape.gradient(y, step).numpy()))
    np.testing.assert_allclose(grads[0][0], grads[1][0])
    np.testing.assert_allclose(grads[1][1], 0.1 * grads[0][1], rtol=1e-5)


def test_offset_lsq_plus_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256,)).astype("float32")
    y = kops.lsq_quantize(x, 0.2, 4, signed=True, narrow_range=False, offset=0.3).numpy()
    y_np, _, _ = np_lsq(x.astype(np.float64), 0.2, 4, True, False, beta=0.3)
    np.testing.assert_allclose(y, y_np, atol=1e-6)


def test_per_channel_steps_broadcast_on_last_axis():
    rng = np.random.default_rng(1)
    w = rng.normal(size=(3, 3, 4, 5)).astype("float32")
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5], "float32")
    y = kops.lsq_quantize(w, s, 4).numpy()
    for c in range(5):
        y_np, _, _ = np_lsq(w[..., c].astype(np.float64), float(s[c]), 4, True, True)
        np.testing.assert_allclose(y[..., c], y_np, atol=1e-6)


@pytest.mark.parametrize(
    "bits,narrow,codes",
    [
        (2, True, [-2, -1, 0, 1]),
        (3, True, list(range(-4, 4))),
        (4, True, list(range(-8, 8))),
        (8, True, list(range(-127, 128))),
        (8, False, list(range(-128, 128))),
        (4, False, list(range(-8, 8))),
    ],
)
def test_signed_grid_has_the_papers_levels(bits, narrow, codes):
    """Below 8 bits the signed grid is LSQ's full grid (2 bits: 4 levels, not
    ternary); at 8 bits narrow range gives TFLite's int8 weights [-127, 127]."""
    step = 0.25
    x = np.linspace(-300 * step, 300 * step, 100001).astype("float32")
    y = kops.lsq_quantize(x, step, bits, signed=True, narrow_range=narrow).numpy()
    np.testing.assert_array_equal(np.unique(np.round(y / step)), codes)
    assert kops.quant_levels(bits, True, narrow) == (-codes[0], codes[-1])


@pytest.mark.parametrize("bits", [0, 1, 9, 4.0, "4", True, None])
def test_bits_out_of_range_raise(bits):
    with pytest.raises(ValueError, match=r"bits must be an int in \[2, 8\]. Received: bits="):
        kops.lsq_quantize(np.ones(3, "float32"), 0.1, bits)


def test_round_ste_rounds_half_to_even_with_identity_gradient():
    x = tf.constant([0.5, 1.5, 2.5, -0.5, -1.5, 0.49, 0.51])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = kops.round_ste(x)
    np.testing.assert_array_equal(y.numpy(), np.round(x.numpy()))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.ones(7))


def test_round_ste_second_derivative_is_zero():
    """The STE form keeps the identity's curvature (unlike FakeQuant ops)."""
    x = tf.constant([0.3, 1.7])
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = tf.reduce_sum(kops.round_ste(x) ** 2)
        dy = inner.gradient(y, x)
    d2 = outer.gradient(dy, x)
    np.testing.assert_allclose(dy.numpy(), 2 * np.round(x.numpy()))
    np.testing.assert_allclose(d2.numpy(), [2.0, 2.0])
