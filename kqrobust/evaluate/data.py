"""Evaluation data and top-1 accuracy."""

import numpy as np

from kqrobust.inputs import batches
from kqrobust.inputs import is_array_pair
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
    if is_array_pair(data, labels=True):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        if max_samples is not None:
            x, y = x[:max_samples], y[:max_samples]
    else:
        pairs = list(batches(data, num_samples=max_samples,
                             what="Evaluation data", labels=True))
        x = np.concatenate([np.asarray(p[0]) for p in pairs])
        y = np.concatenate([np.asarray(p[1]) for p in pairs])
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            "Evaluation data must be (x, y) with as many labels as inputs, at "
            f"least one. Received: x of shape {x.shape}, y of shape {y.shape}.")
    if y.ndim > 1 and y.shape[-1] > 1:
        y = np.argmax(y, axis=-1)
    y = y.reshape(len(y)).astype("int64")
    return x.astype("float32", copy=False), y


def accuracy(model, x, y, batch_size=256):
    """Top-1 accuracy of a classifier's outputs (logits or probabilities)."""
    outputs = predict_in_batches(model, x, batch_size)
    return float(np.mean(np.argmax(outputs, axis=-1) == y))


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
