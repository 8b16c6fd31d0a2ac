"""The training step's input check: one fused `reduce_all(is_finite(x))` per batch.

`QuantModel.train_step` runs `check_inputs` before anything else. With
`"raise"` an in-graph assertion stops the step before any variable changes
and `QuantModel.fit` turns it into a ValueError naming the epoch, the batch
and the sample (`error_from`); with `"skip"` the step is a `tf.cond` that
leaves every variable alone on a non-finite batch.
"""

import re

import keras
import tensorflow as tf

from kqrobust import validation

MODES = ("raise", "skip")
MARKER = "kqrobust: non-finite training input at sample"


def check_mode(mode):
    """Returns `mode` if it is "raise" or "skip", else raises."""
    return validation.one_of(
        mode,
        "nonfinite_batches",
        MODES,
        fix="'raise' (the default: stop with an error naming the batch and sample) or "
        "'skip' (refuse the batch, change nothing).",
    )


def input_finiteness(x):
    """`(finite, sample)`: whether every float input of batch `x` is finite, and the
    index of the first sample that is not (0 when all are).

    One pass over each input: `is_finite` per sample, reduced per sample, then
    over the batch.
    """
    per_sample = None
    for tensor in keras.tree.flatten(x):
        if tensor is None or not tensor.dtype.is_floating:
            continue
        rows = tf.reduce_all(
            tf.math.is_finite(tf.reshape(tensor, [tf.shape(tensor)[0], -1])), axis=1
        )
        per_sample = rows if per_sample is None else tf.logical_and(per_sample, rows)
    if per_sample is None:
        return tf.constant(True), tf.constant(0, tf.int64)
    return tf.reduce_all(per_sample), tf.argmin(tf.cast(per_sample, tf.int32), output_type=tf.int64)


def assert_finite(data):
    """`data` gated by an in-graph assertion that its inputs are finite.

    Every tensor of the returned structure depends on the assertion, so no
    op that reads the batch (the forward pass, and so every update) runs
    when it fails.
    """
    x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
    finite, sample = input_finiteness(x)
    with tf.control_dependencies([tf.debugging.Assert(finite, [MARKER, sample])]):
        return tf.nest.map_structure(lambda t: t if t is None else tf.identity(t), data)


def error_from(error, epoch, batch):
    """The ValueError for an `InvalidArgumentError` raised by `assert_finite`, or None."""
    found = re.search(re.escape(MARKER) + r"\]\s*\[(\d+)\]", str(error))
    if found is None:
        return None
    return ValueError(
        f"Training data holds NaN or Inf at epoch {epoch}, batch {batch}, sample "
        f"{found.group(1)} within the batch. The step was stopped before any variable changed. "
        "Fix: clean the data, or set model.nonfinite_batches = 'skip' to refuse such batches "
        "and train on."
    )


class BatchTracker(keras.callbacks.Callback):
    """Remembers the epoch and batch in progress, for `error_from`'s message."""

    def __init__(self):
        super().__init__()
        self.epoch = self.batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.batch = batch
