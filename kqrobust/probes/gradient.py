"""The gradient norm of the loss, FPQ's Fig. 2 curve (Pang & Cai, arXiv 2503.11159)."""

import math

import tensorflow as tf

from kqrobust.probes.data import as_batches
from kqrobust.probes.objective import Objective


def gradient_norm(model, data, loss=None, variables="kernels", batch_size=128):
    """`||grad_w L||_2`, the gradient norm of the mean loss on `data`.

    The gradient of the whole-data mean loss (batch gradients weighted by
    batch size), not a mean of per-batch norms. Same loss and mode choices as
    `hessian_trace`: the compiled (or given) loss without regularizers, with
    `training=False`.

    Args:
        model: a built Keras model, TF backend.
        data: `(x, y)` arrays, a `tf.data.Dataset` of `(x, y)` batches or an
            iterable of batches.
        loss: a Keras loss, or None for the compiled loss.
        variables: "kernels" (default), "trainable" (LSQ steps enter with their
            gradient scale) or a list of the model's variables.
        batch_size: batch size used to slice arrays.

    Returns:
        The gradient norm, a float.

    Example: `gradient_norm(model, (x_train, y_train))`, run in docs/probes.md.

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv:2503.11159,
        2025, Fig. 2. See docs/methods.md#hessian-probes.
    """
    objective = Objective(model, loss=loss, variables=variables, what="gradient_norm")
    return gradient_norm_of(objective, as_batches(data, batch_size))


def gradient_norm_of(objective, batches):
    """The gradient norm for an existing `Objective` (callbacks reuse theirs)."""
    _, grads = objective.gradient(batches)
    return math.sqrt(sum(float(tf.reduce_sum(tf.square(g))) for g in grads))
