"""HVP, Hutchinson trace and power iteration against an explicit Hessian."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kqrobust import probes
from kqrobust.probes.hutchinson import rademacher
from kqrobust.testing.hessian import LOSS
from kqrobust.testing.hessian import flat_gradient
from kqrobust.testing.hessian import flatten
from kqrobust.testing.hessian import tiny_data
from kqrobust.testing.hessian import tiny_mlp
from kqrobust.testing.hessian import unflatten

# The explicit Hessians cover every trainable variable (the probes default to the kernels).
ALL = {"loss": LOSS, "variables": "trainable"}


def test_explicit_hessian_matches_finite_differences(tiny):
    """The reference itself: central differences of the first-order gradient."""
    model, x, y, hessian = tiny
    assert hessian.shape == (243, 243)
    variables = model.trainable_variables
    base = flatten([v.numpy() for v in variables])
    eps = 1e-5
    rng = np.random.default_rng(1)
    for column in rng.choice(len(base), 8, replace=False):
        grads = []
        for sign in (1, -1):
            shifted = base.copy()
            shifted[column] += sign * eps
            for v, value in zip(variables, unflatten(shifted, variables)):
                v.assign(value)
            grads.append(flat_gradient(model, x, y))
        for v, value in zip(variables, unflatten(base, variables)):
            v.assign(value)
        np.testing.assert_allclose(hessian[:, column], (grads[0] - grads[1]) / (2 * eps), atol=1e-7)


@pytest.mark.parametrize("method", ["forward", "reverse"])
@pytest.mark.parametrize("batch_size", [64, 10])
def test_hvp_matches_explicit_hessian(tiny, method, batch_size):
    model, x, y, hessian = tiny
    v = np.random.default_rng(2).normal(size=hessian.shape[0])
    hv = probes.hessian_vector_product(
        model,
        (x, y),
        unflatten(v, model.trainable_variables),
        **ALL,
        method=method,
        batch_size=batch_size,
    )
    np.testing.assert_allclose(flatten(hv), hessian @ v, rtol=1e-9, atol=1e-11)


def test_hvp_methods_agree_on_a_dataset(tiny):
    model, x, y, _ = tiny
    v = [np.ones(w.shape) for w in model.trainable_variables]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    forward = probes.hessian_vector_product(model, dataset, v, **ALL, method="forward")
    reverse = probes.hessian_vector_product(model, (x, y), v, **ALL, method="reverse")
    np.testing.assert_allclose(flatten(forward), flatten(reverse), rtol=1e-9, atol=1e-12)
    weighted = tf.data.Dataset.from_tensor_slices((x, y, np.ones(len(x)))).batch(16)
    generator = ((x[i : i + 20], y[i : i + 20]) for i in range(0, len(x), 20))
    for data in (weighted, generator):  # sample weights are ignored; generators are read once
        other = probes.hessian_vector_product(model, data, v, **ALL)
        np.testing.assert_allclose(flatten(other), flatten(reverse), rtol=1e-9, atol=1e-12)


def test_compiled_loss_is_used(tiny):
    model, x, y, hessian = tiny
    compiled = tiny_mlp()
    compiled.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    v = np.random.default_rng(3).normal(size=hessian.shape[0])
    hv = probes.hessian_vector_product(
        compiled, (x, y), unflatten(v, compiled.trainable_variables), variables="trainable"
    )
    np.testing.assert_allclose(flatten(hv), hessian @ v, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_trace_samples_are_rademacher_quadratic_forms(tiny, method):
    model, x, y, hessian = tiny
    result = probes.hessian_trace(
        model, (x, y), **ALL, seed=7, tol=0.0, max_probes=6, method=method, verbose=0
    )
    rng = np.random.default_rng(7)
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    expected = []
    for _ in range(6):
        v = flatten(rademacher(rng, shapes))
        assert set(np.unique(v)) == {-1.0, 1.0}
        expected.append(v @ hessian @ v)
    np.testing.assert_allclose(result.samples, expected, rtol=1e-6)
    assert result.num_probes == 6 and not result.converged
    np.testing.assert_allclose(result.estimate, np.mean(expected), rtol=1e-6)
    np.testing.assert_allclose(result.std_error, np.std(expected, ddof=1) / np.sqrt(6), rtol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trace_within_three_standard_errors(tiny, seed):
    model, x, y, hessian = tiny
    result = probes.hessian_trace(model, (x, y), **ALL, seed=seed, verbose=0)
    assert 5 <= result.num_probes <= 100
    assert abs(result.estimate - np.trace(hessian)) <= 3 * result.std_error
    assert float(result) == result.estimate


def test_trace_is_reproducible_and_stops_on_tol(tiny):
    model, x, y, _ = tiny
    a = probes.hessian_trace(model, (x, y), **ALL, seed=3, verbose=0)
    b = probes.hessian_trace(model, (x, y), **ALL, seed=3, verbose=0)
    assert a == b
    loose = probes.hessian_trace(model, (x, y), **ALL, seed=3, tol=10.0, min_probes=2, verbose=0)
    assert loose.converged and loose.num_probes == 2


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_top_eigenvalue_within_one_percent(tiny, method):
    model, x, y, hessian = tiny
    eigenvalues = np.linalg.eigvalsh(hessian)
    dominant = eigenvalues[np.argmax(np.abs(eigenvalues))]
    result = probes.top_hessian_eigenvalue(model, (x, y), **ALL, seed=0, method=method, verbose=0)
    assert result.converged
    assert abs(result.eigenvalue - dominant) <= 0.01 * abs(dominant)
    vector = flatten(result.eigenvector)
    np.testing.assert_allclose(np.linalg.norm(vector), 1.0, rtol=1e-9)


def test_gradient_norm_matches_softmax_regression_formula():
    """Linear softmax regression: grad_W = X^T (softmax(XW + b) - onehot(y)) / n."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3, dtype="float64")])
    x, y = tiny_data(n=50)
    kernel, bias = (v.numpy() for v in model.trainable_variables)
    logits = x @ kernel + bias
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = (p - np.eye(3)[y]) / len(x)
    expected = np.sqrt(np.sum((x.T @ residual) ** 2) + np.sum(residual.sum(0) ** 2))
    for batch_size in (50, 8):
        norm = probes.gradient_norm(model, (x, y), **ALL, batch_size=batch_size)
        np.testing.assert_allclose(norm, expected, rtol=1e-7)
    kernels_only = probes.gradient_norm(model, (x, y), loss=LOSS, variables="kernels")
    np.testing.assert_allclose(kernels_only, np.sqrt(np.sum((x.T @ residual) ** 2)), rtol=1e-7)


def test_progress_bar_is_shown(tiny, capsys):
    model, x, y, _ = tiny
    probes.hessian_trace(model, (x, y), **ALL, seed=0, max_probes=3, verbose=1)
    probes.top_hessian_eigenvalue(model, (x, y), **ALL, seed=0, max_iterations=3, verbose=1)
    out = capsys.readouterr().out
    assert "probe" in out and "trace" in out and "eigenvalue" in out
