"""PAC-Bayes flatness and its magnitude-aware variant (docs/methods.md#generalization-measures)."""

import keras
import numpy as np

from kqrobust import validation
from kqrobust.probes.bisection import bisect_displacement
from kqrobust.probes.data import check_model
from kqrobust.probes.data import numpy_rng
from kqrobust.probes.evaluation import Evaluator
from kqrobust.probes.objective import preserved_state
from kqrobust.probes.perturbation import apply_noise
from kqrobust.probes.perturbation import originals_of
from kqrobust.probes.perturbation import perturbation_targets


def _check_samples(num_samples):
    validation.positive_int(num_samples, "num_samples")


def pac_bayes_sigma(
    model,
    data,
    magnitude_aware=False,
    target=0.1,
    lower=0.0,
    upper=2.0,
    depth=15,
    tol=1e-2,
    num_samples=10,
    eps=1e-3,
    fold_batchnorm=True,
    batch_size=256,
    max_samples=None,
    seed=0,
    verbose=0,
):
    """QGen's `sigma'`: the largest Gaussian weight noise the accuracy tolerates.

    Bisection on `[lower, upper]` for the largest `sigma'` such that adding
    `u ~ N(0, sigma'^2 I)` to the weights changes the accuracy on `data` by
    `target` (0.1), averaged over `num_samples` Monte-Carlo draws. With
    `magnitude_aware`, the noise on weight `w_i` has variance
    `sigma'^2 * w_i^2 + eps^2`. Weights are the kernels and biases with
    BatchNorm folded in (see `kqrobust.probes.perturbation`); the model is
    evaluated with `training=False` and restored afterwards.

    Args:
        model: a built Keras classifier.
        data: `(x, y)` arrays (usually the training set) or batches.
        magnitude_aware: scale the noise by the weights' magnitudes.
        target: the accuracy drop sought (0.1).
        lower: lower end of the search (0).
        upper: upper end of the search (2).
        depth: bisection depth (15).
        tol: accepted distance of the drop to `target` (1e-2).
        num_samples: Monte-Carlo draws per scale (10).
        eps: the magnitude-aware noise floor (1e-3).
        fold_batchnorm: perturb the BatchNorm-folded parameters.
        batch_size: batch size of the evaluations.
        max_samples: evaluate on at most this many samples (None: all).
        seed: int seed of the noise.
        verbose: 1 shows a progress bar over the bisection.

    Returns:
        A `BisectionResult` (`value` is `sigma'`).

    References:
        Jiang et al., "Fantastic generalization measures and where to find
        them", ICLR 2020 (their `pacbayes.flatness` and
        `pacbayes.mag.flatness`).
        Dziugaite and Roy, "Computing nonvacuous generalization bounds",
        UAI 2017.
    """
    check_model(model, "pac_bayes_flatness")
    _check_samples(num_samples)
    evaluator = Evaluator(model, data, batch_size=batch_size, max_samples=max_samples)
    targets = perturbation_targets(model, fold_batchnorm=fold_batchnorm)
    rng = numpy_rng(seed)
    progbar = keras.utils.Progbar(depth, unit_name="step") if verbose else None
    with preserved_state(model):
        base = evaluator.accuracy()
        originals = originals_of(targets)

        def displacement(sigma):
            accuracies = []
            for _ in range(num_samples):
                noise = []
                for t in targets:
                    std = np.sqrt(sigma**2 * t.folded**2 + eps**2) if magnitude_aware else sigma
                    noise.append(rng.standard_normal(t.folded.shape) * std)
                apply_noise(targets, originals, noise)
                accuracies.append(evaluator.accuracy())
            apply_noise(targets, originals, [0.0] * len(targets))
            return abs(base - float(np.mean(accuracies)))

        return bisect_displacement(
            displacement,
            target=target,
            lower=lower,
            upper=upper,
            depth=depth,
            tol=tol,
            progbar=progbar,
        )
