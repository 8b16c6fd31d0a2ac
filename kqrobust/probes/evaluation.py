"""Accuracy of a model on in-memory arrays, through one compiled forward pass.

The QGen searches evaluate the same model hundreds of times with different
weights; one `tf.function` (traced once, reading the variables) keeps that
cheap.
"""

import numpy as np
import tensorflow as tf

from kqrobust.evaluate.data import as_arrays
from kqrobust.evaluate.data import top1_accuracy


class Evaluator:
    """Top-1 accuracy of `model` on fixed `(x, y)` arrays (`training=False`).

    Args:
        model: a built Keras classifier (logits or probabilities).
        data: `(x, y)` arrays or batches (see `kq.evaluate` data rules).
        batch_size: batch size of the forward passes.
        max_samples: keep at most this many samples (None: all).
    """

    def __init__(self, model, data, batch_size=256, max_samples=None):
        self.x, self.y = as_arrays(data, max_samples=max_samples)
        self.batch_size = batch_size
        try:
            wrap = isinstance(model.input, (list, tuple))
        except (AttributeError, ValueError):
            wrap = False
        self._forward = tf.function(
            lambda x: model([x] if wrap else x, training=False), reduce_retracing=True
        )

    def accuracy(self):
        outputs = [
            np.asarray(self._forward(tf.constant(self.x[start : start + self.batch_size])))
            for start in range(0, len(self.x), self.batch_size)
        ]
        return top1_accuracy(np.concatenate(outputs), self.y)
