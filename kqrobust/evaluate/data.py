"""Evaluation data and top-1 accuracy."""

import numpy as np

from kqrobust.inputs import read_pairs
from kqrobust.ptq.calibration import predict_in_batches


def as_arrays(data, max_samples=None):
    """`(x, y)` NumPy arrays from an `(x, y)` tuple or an iterable of batches.

    Args:
        data: `(x, y)` arrays, or an iterable (a `tf.data.Dataset` included)
            of `(x, y)` batches.
        max_samples: keep at most this many samples. None: all of arrays,
            the first `kqrobust.inputs.MAX_ITERABLE_SAMPLES` (10,000) of an
            iterable (an endless dataset returns).

    Returns:
        `(x, y)` with `y` as integer labels (one-hot labels are argmaxed).
    """
    x, y = read_pairs(data, max_samples, what="Evaluation data")
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            "Evaluation data must be (x, y) with as many labels as inputs, at "
            f"least one. Received: x of shape {x.shape}, y of shape {y.shape}."
        )
    if y.ndim > 1 and y.shape[-1] > 1:
        y = np.argmax(y, axis=-1)
    y = y.reshape(len(y)).astype("int64")
    return x.astype("float32", copy=False), y


def top1_accuracy(outputs, labels):
    """The share of samples whose largest output (logit or probability) is the label."""
    return float(np.mean(np.argmax(np.asarray(outputs), axis=-1) == np.asarray(labels)))


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of a classifier's outputs (logits or probabilities)."""
    return top1_accuracy(predict_in_batches(model, x, batch_size), y)


DEFAULT_CALIBRATION_SIZE = 256


def default_calibration(calibration_data, x):
    """`calibration_data`, or the first 256 evaluation inputs when None."""
    if calibration_data is not None:
        return calibration_data
    return x[:DEFAULT_CALIBRATION_SIZE]


def advance(progbar):
    """Advances a `keras.utils.Progbar` by one unit (None: no-op)."""
    if progbar is not None:
        progbar.add(1)
