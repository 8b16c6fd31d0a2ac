"""Worst-case sharpness (QGen, arXiv:2404.11769; docs/methods.md#generalization-measures)."""

import keras
import numpy as np

from kqrobust import validation
from kqrobust.probes.bisection import bisect_displacement
from kqrobust.probes.data import as_batches
from kqrobust.probes.data import numpy_rng
from kqrobust.probes.objective import Objective
from kqrobust.probes.objective import preserved_state
from kqrobust.probes.perturbation import apply_noise
from kqrobust.probes.perturbation import originals_of
from kqrobust.probes.perturbation import perturbation_targets


def sharpness_alpha(
    model,
    data,
    loss=None,
    target=0.1,
    lower=0.0,
    upper=2.0,
    depth=15,
    tol=1e-2,
    ascent_steps=20,
    eps=1e-3,
    fold_batchnorm=True,
    batch_size=256,
    seed=0,
    verbose=0,
):
    """QGen's `alpha'`: the largest box of weight perturbations the loss tolerates.

    Bisection on `[lower, upper]` for the largest `alpha'` such that
    `max L(w + nu) - L(w)` over `|nu_i| <= alpha' (|w_i| + eps)` equals
    `target` (0.1, within `tol`). The inner maximum is found by projected
    gradient ascent: from a uniform random start in the box, `ascent_steps`
    signed-gradient steps of `2.5 / ascent_steps` of the box half-width
    (Madry et al.'s rule), each followed by clipping to the box; the largest
    loss seen is kept. Weights are the BatchNorm-folded kernels and biases
    (see `kqrobust.probes.perturbation`); the loss is the compiled (or given)
    data loss with `training=False`. The model is restored afterwards.

    Args:
        model: a built Keras model.
        data: `(x, y)` arrays (usually the training set) or batches.
        loss: a Keras loss, or None for the compiled loss.
        target: the loss increase sought (0.1).
        lower: lower end of the search (0).
        upper: upper end of the search (2).
        depth: bisection depth (15).
        tol: accepted distance of the increase to `target` (1e-2).
        ascent_steps: gradient-ascent steps of the inner maximisation.
        eps: the box floor (1e-3).
        fold_batchnorm: perturb the BatchNorm-folded parameters.
        batch_size: batch size of the loss and gradient passes.
        seed: int seed of the random starts.
        verbose: 1 shows a progress bar over the bisection.

    Returns:
        A `BisectionResult` (`value` is `alpha'`).

    References:
        Keskar et al., "On large-batch training for deep learning: generalization
        gap and sharp minima", ICLR 2017 (worst-case sharpness).
        Jiang et al., "Fantastic generalization measures and where to find
        them", ICLR 2020 (their `sharpness.mag.flatness`).
        Madry et al., "Towards deep learning models resistant to adversarial
        attacks", ICLR 2018 (projected gradient ascent).
    """
    validation.positive_int(ascent_steps, "ascent_steps")
    targets = perturbation_targets(model, fold_batchnorm=fold_batchnorm)
    objective = Objective(
        model, loss=loss, variables=[t.variable for t in targets], what="worst_case_sharpness"
    )
    batches = as_batches(data, batch_size)
    rng = numpy_rng(seed)
    step_size = 2.5 / ascent_steps
    progbar = keras.utils.Progbar(depth, unit_name="step") if verbose else None
    with preserved_state(model):
        base = objective.loss(batches)
        originals = originals_of(targets)

        def displacement(alpha):
            bounds = [alpha * (np.abs(t.folded) + eps) for t in targets]
            nu = [rng.uniform(-b, b) for b in bounds]
            best = -np.inf
            for step in range(ascent_steps + 1):
                apply_noise(targets, originals, nu)
                value, grads = objective.gradient(batches)
                best = max(best, value - base)
                if step == ascent_steps:
                    break
                nu = [
                    np.clip(n + step_size * b * np.sign(np.asarray(g) * np.sign(t.scale)), -b, b)
                    for n, b, g, t in zip(nu, bounds, grads, targets)
                ]
            apply_noise(targets, originals, [0.0] * len(targets))
            return best

        return bisect_displacement(
            displacement,
            target=target,
            lower=lower,
            upper=upper,
            depth=depth,
            tol=tol,
            progbar=progbar,
        )
