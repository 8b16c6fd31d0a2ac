"""QGen measures: bisection searches against analytic answers, BN folding, seeds."""

import math
import statistics

import keras
import numpy as np
import pytest

from kqrobust.probes.bisection import bisect_displacement
from kqrobust.probes.flatness import pac_bayes_sigma
from kqrobust.probes.generalization import generalization_gap
from kqrobust.probes.generalization import generalization_measures
from kqrobust.probes.perturbation import perturbation_targets
from kqrobust.probes.sharpness import sharpness_alpha
from kqrobust.testing.hessian import LOSS


def test_bisection_finds_a_known_root():
    result = bisect_displacement(lambda s: s**2, target=0.1, depth=15, tol=1e-4)
    assert result.converged
    assert abs(result.value - math.sqrt(0.1)) < 1e-3
    assert result.history[0] == (1.0, 1.0)
    capped = bisect_displacement(lambda s: s**2, target=0.1, depth=3, tol=1e-6)
    assert not capped.converged and capped.iterations == 3
    assert [s for s, _ in capped.history] == [1.0, 0.5, 0.25]


def _margin_model(n, margin):
    """Sample i reads row i of a (n, 2) kernel: its logits are (margin, 0).

    Under noise on the kernel every sample sees independent noise, so the
    accuracy of one draw is a mean of n independent events, each correct with
    probability Phi(margin / std(u_i1 - u_i0)).
    """
    model = keras.Sequential([keras.Input((n,)), keras.layers.Dense(2, use_bias=False)])
    kernel = np.zeros((n, 2), "float32")
    kernel[:, 0] = margin
    model.layers[0].kernel.assign(kernel)
    return model, (np.eye(n, dtype="float32"), np.zeros(n, "int64"))


@pytest.mark.parametrize("magnitude_aware", [False, True])
def test_pac_bayes_sigma_matches_the_gaussian_tail(magnitude_aware):
    n, margin, eps = 1000, 2.0, 1e-3
    model, data = _margin_model(n, margin)

    def analytic_sigma(drop):
        z = statistics.NormalDist().inv_cdf(1.0 - drop)
        if magnitude_aware:  # var(u_i1 - u_i0) = sigma^2 margin^2 + 2 eps^2
            return math.sqrt((margin / z) ** 2 - 2 * eps**2) / margin
        return margin / (math.sqrt(2.0) * z)  # var = 2 sigma^2

    result = pac_bayes_sigma(model, data, magnitude_aware=magnitude_aware, seed=0, eps=eps)
    assert result.converged
    assert 0.09 - 0.01 < result.displacement < 0.11 + 0.01
    # The drop is within 1e-2 of 0.1, plus Monte-Carlo noise (std ~0.003).
    assert analytic_sigma(0.075) < result.value < analytic_sigma(0.125)
    assert abs(result.value - analytic_sigma(result.displacement)) < 0.03 * result.value
    again = pac_bayes_sigma(model, data, magnitude_aware=magnitude_aware, seed=0, eps=eps)
    assert again == result
    np.testing.assert_array_equal(model.layers[0].kernel.numpy()[:, 0], margin)


def _quadratic_model(w_star, scales, n=200, seed=0):
    """Least squares with orthogonal features: at the optimum w*,
    L(w* + nu) - L(w*) = sum_i a_i nu_i^2, a_i = mean(x_i^2)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, len(w_star))))
    x = (q * np.sqrt(n) * np.sqrt(scales)).astype("float32")
    y = x @ np.asarray(w_star, "float32")
    model = keras.Sequential([keras.Input((len(w_star),)), keras.layers.Dense(1, use_bias=False)])
    model.layers[0].kernel.assign(np.asarray(w_star, "float32")[:, None])
    return model, (x, y[:, None]), np.mean(x.astype("float64") ** 2, axis=0)


def test_sharpness_alpha_matches_the_quadratic_worst_case():
    w_star, eps = np.array([0.5, -1.0, 2.0]), 1e-3
    model, data, a = _quadratic_model(w_star, scales=[0.4, 1.0, 0.1])
    # The worst case of a convex quadratic over the box is a corner:
    # alpha^2 * sum_i a_i (|w_i| + eps)^2 = target.
    curvature = float(np.sum(a * (np.abs(w_star) + eps) ** 2))
    analytic = math.sqrt(0.1 / curvature)
    result = sharpness_alpha(model, data, loss="mse", seed=0, eps=eps)
    assert result.converged
    assert abs(result.displacement - 0.1) < 1e-2
    assert math.sqrt(0.09 / curvature) - 1e-3 < result.value < math.sqrt(0.11 / curvature) + 1e-3
    assert abs(result.value - analytic) / analytic < 0.06
    assert sharpness_alpha(model, data, loss="mse", seed=0, eps=eps) == result


def _conv_bn_pair():
    """A Dense+BatchNorm model and the same model with the BatchNorm folded."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    h = keras.layers.Dense(6, use_bias=True, name="dense")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    with_bn = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    rng = np.random.default_rng(0)
    bn = with_bn.get_layer("bn")
    bn.gamma.assign(rng.uniform(0.5, 2.0, 6).astype("float32"))
    bn.beta.assign(rng.normal(size=6).astype("float32"))
    bn.moving_mean.assign(rng.normal(size=6).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, 6).astype("float32"))
    with_bn.get_layer("dense").bias.assign(rng.normal(size=6).astype("float32"))

    inputs = keras.Input((8,))
    h = keras.layers.ReLU()(keras.layers.Dense(6, name="dense")(inputs))
    folded = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    c = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    dense = with_bn.get_layer("dense")
    folded.get_layer("dense").kernel.assign(dense.kernel.numpy() * c)
    folded.get_layer("dense").bias.assign(
        c * (dense.bias.numpy() - bn.moving_mean.numpy()) + bn.beta.numpy()
    )
    folded.get_layer("out").set_weights(with_bn.get_layer("out").get_weights())
    return with_bn, folded


def test_batchnorm_is_folded_virtually():
    with_bn, folded = _conv_bn_pair()
    x = np.random.default_rng(1).normal(size=(300, 8)).astype("float32")
    np.testing.assert_allclose(with_bn(x), folded(x), atol=1e-5)
    y = np.argmax(folded(x), axis=-1)
    targets = perturbation_targets(with_bn)
    assert [t.variable.path for t in targets] == [
        "dense/kernel",
        "bn/beta",
        "out/kernel",
        "out/bias",
    ]
    for a, b in zip(targets, perturbation_targets(folded)):
        np.testing.assert_allclose(a.folded, b.folded, rtol=1e-5, atol=1e-6)
    for magnitude_aware in (False, True):
        kwargs = dict(magnitude_aware=magnitude_aware, seed=3, depth=6)
        a = np.array(pac_bayes_sigma(with_bn, (x, y), **kwargs).history)
        b = np.array(pac_bayes_sigma(folded, (x, y), **kwargs).history)
        np.testing.assert_allclose(a, b, atol=0.01)  # a few argmax ties may flip
    unfolded = perturbation_targets(with_bn, fold_batchnorm=False)
    assert [t.variable.path for t in unfolded][:2] == ["dense/kernel", "dense/bias"]


def test_generalization_measures_report_everything(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=LOSS)
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    result = generalization_measures(
        model,
        (x_train, y_train),
        (x_test, y_test),
        depth=4,
        num_samples=2,
        ascent_steps=2,
        max_samples=300,
        verbose=0,
    )
    gap = generalization_gap(model, (x_train[:300], y_train[:300]), (x_test[:300], y_test[:300]))
    for key, value in gap.items():
        assert result[key] == pytest.approx(value)
    assert result["accuracy_gap"] == pytest.approx(
        result["train_accuracy"] - result["test_accuracy"]
    )
    for sigma, measure in (
        ("pac_bayes_sigma", "pac_bayes_flatness"),
        ("magnitude_pac_bayes_sigma", "magnitude_pac_bayes_flatness"),
        ("sharpness_alpha", "worst_case_sharpness"),
    ):
        assert 0 < result[sigma] < 2
        assert result[measure] == pytest.approx(1 / result[sigma] ** 2)
    assert result["settings"]["depth"] == 4 and result["settings"]["num_samples"] == 2
    assert set(result["searches"]) == {"pac_bayes", "magnitude_pac_bayes", "sharpness"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"measures": ("flatness",)}, "measures must be a non-empty subset"),
        ({"depth": 0}, "depth must be a positive int. Received: depth=0"),
        ({"tol": -1.0}, "tol must be a number >= 0"),
        ({"num_samples": 0}, "num_samples must be a positive int"),
    ],
)
def test_bad_search_settings(kwargs, message):
    model, data = _margin_model(4, 1.0)
    with pytest.raises(ValueError, match=message):
        generalization_measures(
            model, data, data, loss=LOSS, verbose=0, **{"measures": ("pac_bayes",), **kwargs}
        )
