"""Probe inputs: re-iterable `(x, y)` batches, and the checks every probe runs."""

import keras
import numpy as np
import tensorflow as tf

from kqrobust import validation
from kqrobust.inputs import batches
from kqrobust.inputs import is_array_pair
from kqrobust.inputs import split_element

DEFAULT_BATCH_SIZE = 128


def check_backend(what):
    """Raises a clear error unless Keras runs on the TensorFlow backend."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(
            f"{what} needs the TensorFlow backend (nested GradientTape and "
            f"ForwardAccumulator). Received: backend={backend!r}. Fix: set "
            "KERAS_BACKEND=tensorflow before importing keras."
        )


def check_model(model, what):
    """Raises unless `model` is a built `keras.Model` with trainable weights."""
    check_backend(what)
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"{what} expects a keras.Model. Received: model of type {type(model).__name__}."
        )
    if not model.built:
        raise ValueError(
            f"{what} needs a built model. Received: an unbuilt model "
            f"'{model.name}'. Fix: call it on a batch or build it first."
        )
    if not model.trainable_weights:
        raise ValueError(
            f"{what} differentiates the loss with respect to the trainable "
            f"weights. Received: model '{model.name}' with no trainable "
            "weights. Fix: set model.trainable = True (or the layers you want "
            "probed)."
        )


def _batch_size_of(x):
    return int(tf.nest.flatten(x)[0].shape[0])


class Batches:
    """`(x, y)` batches that can be iterated any number of times.

    Arrays are sliced lazily and a `tf.data.Dataset` is re-iterated on every
    pass, so memory stays bounded by one batch; any other iterable (e.g. a
    generator) is read once and kept in memory, at most
    `kqrobust.inputs.MAX_ITERABLE_SAMPLES` (10,000) samples of it.

    Args:
        data: an `(x, y)` tuple of arrays, a `tf.data.Dataset` of `(x, y)`
            batches, or an iterable of `(x, y)` batches.
        batch_size: batch size used to slice arrays (ignored otherwise).
        max_samples: use at most this many samples from arrays (None: all).
    """

    def __init__(self, data, batch_size=DEFAULT_BATCH_SIZE, max_samples=None):
        self.batch_size = validation.positive_int(batch_size, "batch_size")
        self._arrays = None
        self._dataset = None
        self._list = None
        if is_array_pair(data, labels=True):
            x, y = data[0], data[1]
            if len(x) != len(y):
                raise ValueError(
                    "Probe data must have one label per input. Received: x "
                    f"with {len(x)} samples and y with {len(y)}."
                )
            if max_samples is not None:
                x, y = x[:max_samples], y[:max_samples]
            self._arrays = (x, y)
        elif isinstance(data, tf.data.Dataset):
            if data.cardinality() == tf.data.INFINITE_CARDINALITY:
                raise ValueError(
                    "Probe data is an endless tf.data.Dataset (e.g. from .repeat()); every "
                    "probe pass reads all of it. Received: a dataset of infinite "
                    "cardinality. Fix: pass dataset.take(n) for n batches."
                )
            self._dataset = data
        else:
            # Read once and kept; capped, so an endless generator returns.
            self._list = list(batches(data, what="Probe data", labels=True))
        if self._is_empty():
            raise ValueError(
                "Probe data is empty: the loss needs at least one sample. "
                "Received: 0 samples. Fix: pass training data, e.g. "
                "(x_train[:1024], y_train[:1024])."
            )

    def __iter__(self):
        if self._arrays is not None:
            x, y = self._arrays
            for start in range(0, len(x), self.batch_size):
                yield (
                    tf.convert_to_tensor(x[start : start + self.batch_size]),
                    tf.convert_to_tensor(y[start : start + self.batch_size]),
                )
            return
        source = self._dataset if self._dataset is not None else self._list
        for element in source:
            x, y = split_element(element, labels=True, what="Probe data")
            yield tf.nest.map_structure(tf.convert_to_tensor, x), tf.convert_to_tensor(y)

    def _is_empty(self):
        if self._arrays is not None:
            return len(self._arrays[0]) == 0
        first = self._dataset.take(1) if self._dataset is not None else self._list[:1]
        for element in first:
            # A first batch of size 0 is rare enough to afford a full count.
            x, _ = split_element(element, labels=True, what="Probe data")
            return _batch_size_of(x) == 0 and self.num_samples() == 0
        return True

    def num_samples(self):
        """The number of samples in one pass (iterates a dataset once)."""
        if self._arrays is not None:
            return len(self._arrays[0])
        if not hasattr(self, "_count"):
            self._count = sum(_batch_size_of(x) for x, _ in self)
        return self._count


def as_batches(data, batch_size=DEFAULT_BATCH_SIZE):
    """`data` as `Batches` (an existing `Batches` is returned as is)."""
    if isinstance(data, Batches):
        return data
    return Batches(data, batch_size=batch_size)


def numpy_rng(seed):
    """A NumPy generator from an int seed (None: nondeterministic)."""
    return np.random.default_rng(validation.optional_seed(seed))
