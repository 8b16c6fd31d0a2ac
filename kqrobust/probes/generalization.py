"""QGen's generalization measures in one call (docs/methods.md#generalization-measures)."""

import time

from kqrobust.probes.data import as_batches
from kqrobust.probes.data import check_model
from kqrobust.probes.evaluation import Evaluator
from kqrobust.probes.flatness import pac_bayes_sigma
from kqrobust.probes.objective import Objective
from kqrobust.probes.sharpness import sharpness_alpha

MEASURES = ("gap", "pac_bayes", "magnitude_pac_bayes", "sharpness")


def generalization_gap(model, train_data, test_data, loss=None, batch_size=256, max_samples=None):
    """Train-minus-test accuracy and test-minus-train loss.

    Args:
        model: a built Keras classifier.
        train_data: `(x, y)` arrays or batches of the training set.
        test_data: `(x, y)` arrays or batches of the test set.
        loss: a Keras loss, or None for the compiled loss.
        batch_size: batch size of the evaluations.
        max_samples: use at most this many samples of each set (None: all).

    Returns:
        A dict: `train_accuracy`, `test_accuracy`, `accuracy_gap` (train minus
        test), `train_loss`, `test_loss`, `loss_gap` (test minus train).

    Example: `generalization_gap(model, (x_train, y_train), (x_test, y_test))`;
    docs/probes.md runs `generalization_measures`, which includes it.
    """
    objective = Objective(model, loss=loss, what="generalization_gap")
    result = {}
    for split, data in (("train", train_data), ("test", test_data)):
        evaluator = Evaluator(model, data, batch_size=batch_size, max_samples=max_samples)
        result[f"{split}_accuracy"] = evaluator.accuracy()
        result[f"{split}_loss"] = objective.loss(as_batches((evaluator.x, evaluator.y), batch_size))
    result["accuracy_gap"] = result["train_accuracy"] - result["test_accuracy"]
    result["loss_gap"] = result["test_loss"] - result["train_loss"]
    return result


def generalization_measures(
    model,
    train_data,
    test_data,
    loss=None,
    measures=MEASURES,
    target=0.1,
    depth=15,
    tol=1e-2,
    num_samples=10,
    eps=1e-3,
    ascent_steps=20,
    fold_batchnorm=True,
    batch_size=256,
    max_samples=None,
    seed=0,
    verbose=1,
):
    """The generalization gap, PAC-Bayes flatness, its magnitude-aware variant
    and worst-case sharpness of one model.

    - `accuracy_gap`, `loss_gap`: see `generalization_gap`.
    - `pac_bayes_flatness = 1 / sigma'^2`, `sigma'` the largest Gaussian
      weight-noise scale whose mean accuracy drop on the training set is 0.1
      (bisection on [0, 2], depth 15, tolerance 1e-2, 10 draws).
    - `magnitude_pac_bayes_flatness`: the same with noise variance
      `sigma'^2 w_i^2 + eps^2`, `eps = 1e-3`.
    - `worst_case_sharpness = 1 / alpha'^2`, `alpha'` the largest box
      `|nu_i| <= alpha' (|w_i| + eps)` whose worst-case training-loss
      increase is 0.1 (projected gradient ascent inside the bisection).

    Larger flatness/sharpness values mean a sharper minimum. Weights are the
    BatchNorm-folded kernels and biases; every search is seeded, so the
    result is reproducible, and the model is restored afterwards.

    Args:
        model: a built Keras classifier (float, quantized or robustified).
        train_data: `(x, y)` arrays or batches: the searches run on it.
        test_data: `(x, y)` arrays or batches: only the gap uses it.
        loss: a Keras loss, or None for the compiled loss.
        measures: a subset of `("gap", "pac_bayes", "magnitude_pac_bayes",
            "sharpness")`.
        target: the displacement of every search (0.1).
        depth: bisection depth (15).
        tol: bisection tolerance on the displacement (1e-2).
        num_samples: Monte-Carlo draws per PAC-Bayes scale (10).
        eps: the magnitude floor (1e-3).
        ascent_steps: gradient-ascent steps of the sharpness maximisation.
        fold_batchnorm: perturb the BatchNorm-folded parameters.
        batch_size: batch size of the evaluations.
        max_samples: use at most this many training/test samples (None: all).
        seed: int seed of every random draw.
        verbose: 1 prints one progress bar per search.

    Returns:
        A dict with the measures above, the scales found (`pac_bayes_sigma`,
        `magnitude_pac_bayes_sigma`, `sharpness_alpha`), the full
        `BisectionResult`s under `searches`, and the search settings under
        `settings`.

    Example: `generalization_measures(model, (x_tr, y_tr), (x_te,
    y_te))["pac_bayes_flatness"]`, run in docs/probes.md.

    References:
        Jiang et al., "Fantastic generalization measures and where to find
        them", ICLR 2020; AskariHemmat et al., "QGen: On the Ability to
        Generalize in Quantization Aware Training", arXiv:2404.11769, 2024
        (the measures on quantized networks).
    """
    check_model(model, "generalization_measures")
    unknown = [m for m in measures if m not in MEASURES]
    if unknown or not measures:
        raise ValueError(
            f"measures must be a non-empty subset of {MEASURES}. Received: "
            f"measures={tuple(measures)!r}"
        )
    settings = {
        "target": target,
        "lower": 0.0,
        "upper": 2.0,
        "depth": depth,
        "tol": tol,
        "num_samples": num_samples,
        "eps": eps,
        "ascent_steps": ascent_steps,
        "fold_batchnorm": fold_batchnorm,
        "max_samples": max_samples,
        "seed": seed,
    }
    result = {"settings": settings, "searches": {}, "seconds": {}}
    train = Evaluator(model, train_data, batch_size=batch_size, max_samples=max_samples)
    train_arrays = (train.x, train.y)
    search = {
        "target": target,
        "depth": depth,
        "tol": tol,
        "fold_batchnorm": fold_batchnorm,
        "batch_size": batch_size,
        "seed": seed,
        "verbose": verbose,
    }
    for measure in measures:
        start = time.perf_counter()
        if measure == "gap":
            result.update(
                generalization_gap(
                    model,
                    train_arrays,
                    test_data,
                    loss=loss,
                    batch_size=batch_size,
                    max_samples=max_samples,
                )
            )
        elif measure in ("pac_bayes", "magnitude_pac_bayes"):
            found = pac_bayes_sigma(
                model,
                train_arrays,
                magnitude_aware=measure == "magnitude_pac_bayes",
                num_samples=num_samples,
                eps=eps,
                **search,
            )
            result["searches"][measure] = found
            result[f"{measure}_sigma"] = found.value
            result[f"{measure}_flatness"] = 1.0 / found.value**2
        else:
            found = sharpness_alpha(
                model, train_arrays, loss=loss, ascent_steps=ascent_steps, eps=eps, **search
            )
            result["searches"][measure] = found
            result["sharpness_alpha"] = found.value
            result["worst_case_sharpness"] = 1.0 / found.value**2
        result["seconds"][measure] = time.perf_counter() - start
    return result
