"""Reading user data: one normalisation of arrays, `(x, y)` and iterables, capped and checked.

Calibration (`kq.ptq`, activation steps, BatchNorm re-estimation), the
TFLite representative set, evaluation and probe data all read through
`batches`. Arrays are read in full; an iterable (a generator, a
`tf.data.Dataset`, a `keras.utils.PyDataset`) is read up to a cap, so an
endless generator or a `.repeat()` dataset returns.
"""

import keras
import numpy as np
from absl import logging

from kqrobust import validation

# The most samples read from an iterable when the caller sets no number.
MAX_ITERABLE_SAMPLES = 10_000


def is_array_pair(data, labels=False):
    """Whether `data` is an `(x, y)` or `(x, y, w)` tuple of arrays.

    A list counts only when `labels` (else `[x1, x2]` is a list of batches).
    """
    sequence = (tuple, list) if labels else tuple
    return isinstance(data, sequence) and len(data) in (2, 3) and hasattr(data[0], "shape")


def _elements(data, batch_size, labels):
    """`(elements, is_array)`: the batches of `data` as the user gave them."""
    if is_array_pair(data, labels):
        x, y = data[0], data[1]
        return (
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ), True
    if hasattr(data, "shape"):
        return (data[i : i + batch_size] for i in range(0, len(data), batch_size)), True
    if isinstance(data, keras.utils.PyDataset):
        return (data[i] for i in range(len(data))), False
    try:
        return iter(data), False
    except TypeError as err:
        raise ValueError(
            "Data must be an array of inputs, an (x, y) tuple of arrays, a "
            "tf.data.Dataset or an iterable of batches. Received: "
            f"{type(data).__name__}."
        ) from err


def split_element(element, labels=False, what="data"):
    """`(x, y)` of one element: `y` is None unless `labels` (then `(x, y)` is required)."""
    if labels:
        if not (isinstance(element, (tuple, list)) and len(element) >= 2):
            raise ValueError(
                f"{what} must yield (x, y) batches. Received an element of type "
                f"{type(element).__name__}. Fix: pass (x, y) arrays or a dataset of "
                "(x, y) batches."
            )
        return element[0], element[1]
    if isinstance(element, dict):
        raise ValueError(
            f"{what} elements must be arrays or (x, y) tuples. Received: a dict with keys "
            f"{sorted(element)}. Fix: map the dataset to (x, y) tuples."
        )
    return (element[0] if isinstance(element, (tuple, list)) else element), None


def batches(
    data,
    batch_size=32,
    num_samples=None,
    what="data",
    labels=False,
    sample_shape=None,
    check_finite=True,
):
    """Yields the input batches (or `(x, y)` batches) of `data`, at most `num_samples` samples.

    Args:
        data: an input array `(N, ...)`, an `(x, y[, w])` tuple of arrays, a
            `keras.utils.PyDataset`, or an iterable of batches (a
            `tf.data.Dataset` included) whose elements are inputs or `(x,
            y[, w])` tuples.
        batch_size: the batch size for arrays (iterables keep theirs).
        num_samples: stop after this many samples. None: all of an array,
            at most `MAX_ITERABLE_SAMPLES` (10,000) of an iterable (a warning
            says when the cap is reached).
        what: the argument's name, for error messages.
        labels: yield `(x, y)` instead of `x`.
        sample_shape: when given, an element of exactly this shape is one
            sample and gets a batch axis.
        check_finite: raise (`validation.finite_array`) on a NaN/Inf input,
            naming its batch and sample, before it is yielded.

    Raises:
        ValueError: for data that holds no sample or a non-finite input.
    """
    if num_samples is not None:
        num_samples = validation.positive_int(num_samples, "num_samples")
    if batch_size is not None:
        batch_size = validation.positive_int(batch_size, "batch_size")
    elements, is_array = _elements(data, batch_size, labels)
    cap = num_samples if num_samples is not None or is_array else MAX_ITERABLE_SAMPLES
    seen = 0
    for index, element in enumerate(elements):
        x, y = split_element(element, labels, what)
        if sample_shape is not None and tuple(np.shape(x)) == tuple(sample_shape):
            x, y = x[None], None if y is None else np.asarray(y)[None]
        if cap is not None and seen + len(x) > cap:
            x, y = x[: cap - seen], None if y is None else y[: cap - seen]
        if len(x) == 0:
            break
        if check_finite:
            validation.finite_array(
                np.asarray(x), what, batch=None if is_array else index, offset=seen
            )
        seen += len(x)
        yield (x, y) if labels else x
        if cap is not None and seen >= cap:
            if num_samples is None:
                logging.warning(
                    "%s: read the first %d samples of an iterable and stopped (the cap for "
                    "data of unknown length). Pass an array, or a smaller dataset, to use "
                    "other samples.",
                    what,
                    cap,
                )
            break
    if seen == 0:
        raise ValueError(
            f"{what} is empty: it holds no sample. Received: 0 samples ({type(data).__name__}). "
            "Fix: pass a few hundred training inputs, e.g. x_train[:512], or a batched "
            "tf.data.Dataset."
        )


def read_pairs(data, num_samples=None, what="data"):
    """`(x, y)` NumPy arrays of labelled data: an `(x, y)` tuple of arrays
    (sliced to `num_samples`, read as it is), or an iterable of `(x, y)`
    batches read by `batches` (capped, checked finite)."""
    if is_array_pair(data, labels=True):
        x, y = np.asarray(data[0]), np.asarray(data[1])
        return (x, y) if num_samples is None else (x[:num_samples], y[:num_samples])
    pairs = list(batches(data, num_samples=num_samples, what=what, labels=True))
    return (
        np.concatenate([np.asarray(p[0]) for p in pairs]),
        np.concatenate([np.asarray(p[1]) for p in pairs]),
    )


def read_inputs(data, num_samples=None, what="data", sample_shape=None):
    """The inputs of `data` (as `batches` reads them) as one NumPy array."""
    return np.concatenate(
        [
            np.asarray(x)
            for x in batches(
                data,
                batch_size=num_samples or 1024,
                num_samples=num_samples,
                what=what,
                sample_shape=sample_shape,
            )
        ]
    )
