"""Checks and materializes the representative dataset of a TFLite export."""

import numpy as np


def _first(item):
    """`x` of an `(x, y)` or `(x, y, w)` element, else the element."""
    if isinstance(item, (tuple, list)) and item:
        return item[0]
    if isinstance(item, dict):
        raise ValueError(
            "representative_data elements must be arrays or (x, y) tuples. "
            f"Received: a dict with keys {sorted(item)}")
    return item


def representative_array(data, input_shape, num_samples=200):
    """Returns up to `num_samples` input samples as one float32 array.

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
            finite, or `num_samples` is not a positive int.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(
            "num_samples must be a positive int (how many representative samples set "
            f"the ranges). Received: num_samples={num_samples!r}. Fix: pass e.g. 200.")
    expected = tuple(input_shape)
    if data is None:
        raise ValueError(
            "A full-integer export needs representative_data (a few hundred input "
            "samples) to set the ranges of unquantized tensors. Received: "
            "representative_data=None. Fix: pass e.g. x_train[:200], or "
            "quantize=False for a float model.")
    if isinstance(data, tuple) and len(data) in (2, 3) and not np.isscalar(data[0]):
        data = data[0]
    if isinstance(data, np.ndarray) or hasattr(data, "numpy") and not hasattr(data, "element_spec"):
        batches = [np.asarray(data)]
    else:
        batches, count = [], 0
        for item in data:
            array = np.asarray(_first(item))
            if array.shape == expected:
                array = array[None]
            batches.append(array)
            count += len(array)
            if count >= num_samples:
                break
    batches = [b for b in batches if b.size]
    if not batches:
        raise ValueError(
            "representative_data is empty. Received: no samples. Fix: pass at "
            "least one input sample (a few hundred are best).")
    for batch in batches:
        shape = tuple(batch.shape[1:])
        if len(shape) != len(expected) or any(
                e is not None and e != s for e, s in zip(expected, shape)):
            raise ValueError(
                f"representative_data samples must have the model input shape "
                f"{expected}. Received: samples of shape {shape} (batch shape "
                f"{tuple(batch.shape)}). Fix: pass an array of shape (N, "
                f"{', '.join(str(d) for d in expected)}).")
    x = np.concatenate(batches)[:num_samples].astype(np.float32)
    finite = np.isfinite(x).reshape(len(x), -1).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"representative_data holds NaN or Inf in {int((~finite).sum())} of its first "
            f"{len(x)} samples (e.g. sample {int(np.argmin(finite))}): ranges set from them "
            "would be wrong, and the TFLite converter crashes on them. Fix: drop or clean "
            "those samples.")
    return x
