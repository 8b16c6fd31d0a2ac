"""`TerminateOnNaN` that says what went bad: the loss, or which variable (steps first)."""

import math

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from kqrobust import validation


class TerminateOnNaN(keras.callbacks.Callback):
    """Stops training at the first non-finite loss or variable and names the culprit.

    Keras' own `TerminateOnNaN` looks at the loss only, which quantizers keep
    finite while NaN spreads through the weights (a NaN input is clipped to
    a finite code). This one also checks every float variable of the model
    (kernels, quantizer steps, BatchNorm statistics) after every
    `check_every` batches, with one compiled `reduce_all(is_finite)`, and
    then reports the quantizer steps (variables named `*_step`) and other
    weights that are not finite, so a user can tell an exploding loss from a
    collapsed LSQ step. The message is logged and kept in `message`.

    Args:
        check_every: check the variables every `check_every` batches (1, the
            default: every batch; 0: only when the loss is not finite).
    """

    def __init__(self, check_every=1):
        super().__init__()
        self.check_every = validation.non_negative_int(
            check_every, "check_every", "1 checks the variables after every batch, 0 only the loss."
        )
        self.message = None
        self._all_finite = None

    def on_train_begin(self, logs=None):
        variables = [v for v in self.model.weights if "float" in str(v.dtype)]
        self._all_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v.value)) for v in variables])
        )

    def non_finite_variables(self):
        """Paths of the model variables holding NaN or Inf, quantizer steps first."""
        bad = [
            v.path
            for v in self.model.weights
            if not np.isfinite(keras.ops.convert_to_numpy(v)).all()
        ]
        return sorted(bad, key=lambda path: (not path.endswith("_step"), path))

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        loss_bad = loss is not None and not math.isfinite(float(loss))
        scheduled = self.check_every and (batch + 1) % self.check_every == 0
        if not loss_bad and not (scheduled and not bool(self._all_finite())):
            return
        bad = self.non_finite_variables()
        parts = [f"batch {batch}: loss={loss}"]
        if bad:
            steps = [p for p in bad if p.endswith("_step")]
            if steps:
                parts.append(f"non-finite quantizer steps: {steps}")
            others = [p for p in bad if not p.endswith("_step")]
            if others:
                parts.append(f"non-finite weights: {others[:10]}")
        else:
            parts.append(
                "every weight is finite, so the loss itself overflowed "
                "(check the learning rate and the data)"
            )
        self.message = "Training stopped, NaN/Inf detected at " + "; ".join(parts)
        logging.error(self.message)
        self.model.stop_training = True
