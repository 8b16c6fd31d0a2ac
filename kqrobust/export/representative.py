"""Checks and materializes the representative dataset of a TFLite export."""

import numpy as np

from kqrobust import validation
from kqrobust.inputs import batches


def representative_array(data, input_shape, num_samples=200):
    """Returns up to `num_samples` input samples as one float32 array.

    Only the first `num_samples` samples are read, so an endless generator
    or a `.repeat()` dataset is fine.

    Args:
        data: a NumPy array of samples `(N, *input_shape)`, an `(x, y)` tuple,
            a `tf.data.Dataset` (of batches or single samples, `(x, y)`
            allowed) or an iterable of arrays.
        input_shape: the model input shape without the batch axis.
        num_samples: at most this many samples are kept.

    Returns:
        A float32 array of shape `(n, *input_shape)`, `n >= 1`.

    Raises:
        ValueError: when the data is missing, empty, wrongly shaped or not
            finite (the converter crashes on NaN/Inf), or `num_samples` is not
            a positive int.
    """
    validation.positive_int(
        num_samples,
        "num_samples",
        "pass e.g. 200 (how many representative samples set the ranges).",
    )
    expected = tuple(input_shape)
    if data is None:
        raise ValueError(
            "A full-integer export needs representative_data (a few hundred input "
            "samples) to set the ranges of unquantized tensors. Received: "
            "representative_data=None. Fix: pass e.g. x_train[:200], or "
            "quantize=False for a float model."
        )
    arrays = []
    for batch in batches(
        data,
        batch_size=num_samples,
        num_samples=num_samples,
        what="representative_data",
        sample_shape=expected,
        check_finite=False,
    ):
        batch = np.asarray(batch)
        shape = tuple(batch.shape[1:])
        if len(shape) != len(expected) or any(
            e is not None and e != s for e, s in zip(expected, shape)
        ):
            raise ValueError(
                f"representative_data samples must have the model input shape "
                f"{expected}. Received: samples of shape {shape} (batch shape "
                f"{tuple(batch.shape)}). Fix: pass an array of shape (N, "
                f"{', '.join(str(d) for d in expected)})."
            )
        arrays.append(batch)
    x = np.concatenate(arrays).astype(np.float32)
    return validation.finite_array(x, "representative_data")
