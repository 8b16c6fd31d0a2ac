"""Accuracy under corrupted inputs (QGen's distorted-data evaluation)."""

import keras
import numpy as np

from kqrobust.probes.corruptions import CORRUPTIONS
from kqrobust.probes.corruptions import corrupt
from kqrobust.probes.data import check_backend
from kqrobust.probes.evaluation import Evaluator


def corruption_robustness(
    model,
    data,
    corruptions=None,
    severities=(1, 2, 3, 4, 5),
    value_range=(0.0, 1.0),
    batch_size=256,
    max_samples=None,
    seed=0,
    verbose=1,
):
    """Top-1 accuracy of `model` on corrupted copies of `data`.

    Each corruption (`kq.probes.corrupt`: Gaussian noise, Gaussian blur,
    contrast, brightness, JPEG; CIFAR-10-C severities) is applied to the
    whole set at each severity and the model is evaluated with
    `training=False`. Run it on the float model and on the quantized ones
    to compare their robustness (docs/methods.md#generalization-measures).

    Args:
        model: a built Keras classifier taking images `(N, H, W, C)`.
        data: `(x, y)` arrays or batches of the test set.
        corruptions: names to run (None: all five).
        severities: ints in [1, 5].
        value_range: the range of the model's input images.
        batch_size: batch size of the evaluations.
        max_samples: use at most this many samples (None: all).
        seed: int seed of the random corruptions.
        verbose: 1 shows a progress bar.

    Returns:
        A dict: `clean_accuracy`; `accuracy[name]`, one accuracy per severity;
        `mean_accuracy[name]` over severities; `mean_corruption_accuracy`
        over every corruption and severity; `severities`.

    Example: `corruption_robustness(model, (x_test, y_test), severities=[1, 3,
    5])["accuracy"]["gaussian_noise"]`, run in docs/probes.md.

    References:
        Hendrycks and Dietterich, ICLR 2019 (corruptions and severities);
        AskariHemmat et al., "QGen: On the Ability to Generalize in
        Quantization Aware Training", arXiv:2404.11769, 2024 (robustness to
        distorted data).
    """
    check_backend("corruption_robustness")
    names = sorted(CORRUPTIONS) if corruptions is None else list(corruptions)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown or not names:
        raise ValueError(
            f"corruptions must be a non-empty list of {sorted(CORRUPTIONS)}. "
            f"Received: corruptions={corruptions!r}"
        )
    severities = list(severities)
    bad = [
        s for s in severities if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5
    ]
    if bad or not severities:
        raise ValueError(
            f"severities must be a non-empty list of ints in [1, 5]. Received: "
            f"severities={severities!r}"
        )
    evaluator = Evaluator(model, data, batch_size=batch_size, max_samples=max_samples)
    clean_x = evaluator.x
    result = {
        "clean_accuracy": evaluator.accuracy(),
        "accuracy": {},
        "mean_accuracy": {},
        "severities": severities,
    }
    progbar = (
        keras.utils.Progbar(len(names) * len(severities), unit_name="evaluation")
        if verbose
        else None
    )
    try:
        for i, name in enumerate(names):
            accuracies = []
            for severity in severities:
                evaluator.x = corrupt(
                    clean_x,
                    name,
                    severity,
                    value_range=value_range,
                    seed=seed + 1000 * i + severity,
                )
                accuracies.append(evaluator.accuracy())
                if progbar is not None:
                    progbar.add(1, [("accuracy", accuracies[-1])])
            result["accuracy"][name] = accuracies
            result["mean_accuracy"][name] = float(np.mean(accuracies))
    finally:
        evaluator.x = clean_x
    result["mean_corruption_accuracy"] = float(np.mean(list(result["mean_accuracy"].values())))
    return result
