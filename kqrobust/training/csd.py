"""FPQ's channel-wise standardization distillation (CSD)."""

from keras import ops


def standardize_channels(z, epsilon=1e-5):
    """`(z - mu_c) / sqrt(var_c + epsilon)`, statistics over all but the last axis."""
    z = ops.cast(z, "float32")
    axes = tuple(range(len(z.shape) - 1))
    mean = ops.mean(z, axis=axes, keepdims=True)
    variance = ops.mean(ops.square(z - mean), axis=axes, keepdims=True)
    return (z - mean) / ops.sqrt(variance + epsilon)


def csd_loss(student_features, teacher_features, epsilon=1e-5):
    """`sum_layers sum_channels mean_(batch, space) (z~_t - z~_s)^2`.

    Each feature map is standardised per channel (last axis) over the batch
    and spatial axes; the squared difference is averaged over each channel's
    elements (a normalisation the paper's sum allows) and summed over
    channels and layers. The teacher side has its gradient stopped.

    Under a `tf.distribute` strategy, `QuantModel.train_step` calls this on
    each replica: the channel statistics `mu_c`, `var_c` are those of the
    replica's share of the batch (as non-synchronised BatchNorm's are), so
    the loss the optimizer sees is the mean over replicas of per-replica
    CSD, not the CSD of the global batch. Each statistic still covers
    `batch_per_replica * H * W` elements; with one replica both coincide.

    Args:
        student_features: the student's conv outputs, a list.
        teacher_features: the teacher's matching conv outputs, same order.
        epsilon: the variance offset.

    Returns:
        A float32 scalar.

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv 2503.11159,
        "Channel-wise Standardization Distillation".
    """
    total = 0.0
    for z_s, z_t in zip(student_features, teacher_features):
        diff = standardize_channels(ops.stop_gradient(z_t), epsilon) - standardize_channels(
            z_s, epsilon)
        axes = tuple(range(len(diff.shape) - 1))
        total = total + ops.sum(ops.mean(ops.square(diff), axis=axes))
    return total
