"""KURE against NumPy (docs/methods.md#kure): kurtosis, loss and gradient."""

import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.regularizers import kurtosis
from kqrobust.testing import TestCase


def np_kure(kernel, target, weight):
    """`(loss, dloss/dW)` of `weight * (Kurt(W) - target)^2` in float64."""
    w = kernel.astype(np.float64).ravel()
    n = w.size
    c = w - w.mean()
    m2, m4 = np.mean(c**2), np.mean(c**4)
    kurt = m4 / m2**2
    dm4 = 4.0 / n * (c**3 - np.mean(c**3))
    dm2 = 2.0 / n * c
    dkurt = dm4 / m2**2 - 2.0 * m4 / m2**3 * dm2
    loss = weight * (kurt - target) ** 2
    return kurt, loss, (2.0 * weight * (kurt - target) * dkurt).reshape(kernel.shape)


@pytest.mark.parametrize("shape", [(3, 3, 1, 4), (7, 3), (3, 3, 8, 5)])
@pytest.mark.parametrize("target,weight", [(1.8, 1.0), (3.0, 0.25)])
def test_value_and_gradient_match_numpy(shape, target, weight):
    kernel = np.random.default_rng(3).laplace(0.05, 0.3, shape).astype("float32")
    variable = tf.Variable(kernel)
    reg = kq.regularizers.KURE(target=target, weight=weight)
    with tf.GradientTape() as tape:
        value = reg(variable)
    kurt, ref, ref_grad = np_kure(kernel, target, weight)
    np.testing.assert_allclose(float(kurtosis(kernel)), kurt, rtol=1e-5)
    np.testing.assert_allclose(float(value), ref, rtol=1e-4)
    np.testing.assert_allclose(
        tape.gradient(value, variable).numpy(), ref_grad, rtol=1e-3, atol=1e-6
    )


def test_uniform_weights_reach_the_target():
    kernel = np.random.default_rng(4).uniform(-1, 1, (200_000,)).astype("float32")
    assert float(kurtosis(kernel)) == pytest.approx(1.8, abs=0.01)


def test_serialization_and_validation():
    TestCase().run_serialization_test(kq.regularizers.KURE(target=2.0, weight=0.5))
    with pytest.raises(ValueError, match="weight must be a float >= 0. Received: weight=-1"):
        kq.regularizers.KURE(weight=-1)
