"""Clear errors for bad probe inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kqrobust import probes
from kqrobust.testing.hessian import LOSS
from kqrobust.testing.hessian import tiny_data
from kqrobust.testing.hessian import tiny_mlp

# Vectors over every trainable variable (the probes default to the kernels).
ALL = {"loss": LOSS, "variables": "trainable"}

PROBES = [
    lambda m, d, **kw: probes.hessian_trace(m, d, verbose=0, **kw),
    lambda m, d, **kw: probes.top_hessian_eigenvalue(m, d, verbose=0, **kw),
    lambda m, d, **kw: probes.gradient_norm(m, d, **kw),
    lambda m, d, **kw: probes.hessian_vector_product(
        m, d, [np.zeros(w.shape) for w in m.trainable_variables], **kw
    ),
]


@pytest.fixture(scope="module")
def model():
    return tiny_mlp()


@pytest.mark.parametrize("probe", PROBES)
@pytest.mark.parametrize(
    "empty",
    [
        (np.zeros((0, 6)), np.zeros((0,), "int64")),
        tf.data.Dataset.from_tensor_slices((np.zeros((0, 6)), np.zeros((0,), "int64"))).batch(4),
        [],
    ],
)
def test_empty_data(model, probe, empty):
    with pytest.raises(ValueError, match="Probe data is empty.*Received: 0 samples"):
        probe(model, empty, loss=LOSS)


@pytest.mark.parametrize("probe", PROBES)
def test_no_trainable_weights(probe):
    frozen = tiny_mlp()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights.*trainable = True"):
        probe(frozen, tiny_data(), loss=LOSS)


@pytest.mark.parametrize("probe", PROBES)
def test_non_tensorflow_backend(model, probe, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend.*backend='jax'.*KERAS_BACKEND"):
        probe(model, tiny_data(), loss=LOSS)


@pytest.mark.parametrize(
    "measure",
    [
        lambda m, d: probes.generalization_measures(m, d, d, loss=LOSS, verbose=0),
        lambda m, d: probes.pac_bayes_sigma(m, d),
        lambda m, d: probes.sharpness_alpha(m, d, loss=LOSS),
        lambda m, d: probes.corruption_robustness(m, d, verbose=0),
    ],
)
def test_measures_need_tensorflow(model, measure, monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ValueError, match="TensorFlow backend.*backend='jax'"):
        measure(model, tiny_data())


def test_missing_loss(model):
    with pytest.raises(ValueError, match="not compiled and loss=None"):
        probes.gradient_norm(model, tiny_data())


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "exact"}, "method must be one of.*Received: method='exact'"),
        ({"variables": "biases"}, "variables must be one of.*Received: variables='biases'"),
        ({"variables": [keras.Variable(1.0)]}, "variables must belong to the model"),
        ({"batch_size": 0}, "batch_size must be a positive int. Received: batch_size=0"),
    ],
)
def test_bad_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        probes.hessian_trace(model, tiny_data(), loss=LOSS, verbose=0, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tol": -1}, "tol must be a number >= 0. Received: tol=-1"),
        ({"max_probes": 0}, "max_probes must be a positive int. Received: max_probes=0"),
        ({"seed": "a"}, "seed must be an int or None"),
    ],
)
def test_bad_trace_arguments(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        probes.hessian_trace(model, tiny_data(), loss=LOSS, verbose=0, **kwargs)


def test_bad_vector(model):
    v = [np.zeros(w.shape) for w in model.trainable_variables]
    with pytest.raises(ValueError, match="one tensor per probed variable"):
        probes.hessian_vector_product(model, tiny_data(), v[:-1], **ALL)
    v[0] = np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"expected shape \(6, 24\). Received: shape \(2, 2\)"):
        probes.hessian_vector_product(model, tiny_data(), v, **ALL)


def test_bad_batches(model):
    with pytest.raises(ValueError, match="must yield \\(x, y\\) batches"):
        probes.gradient_norm(model, [np.zeros((2, 6))], loss=LOSS)
