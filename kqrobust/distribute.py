"""Choosing a `tf.distribute` strategy, and batch/learning-rate scaling under it.

Conventions (documented in docs/distributed.md):
  - `--batch_size` is the per-replica batch; the global batch is
    `per_replica * strategy.num_replicas_in_sync`.
  - The learning rate scales linearly with the global batch relative to a
    reference batch (Goyal et al. 2017): `lr = base_lr * global / reference`.
"""

import os

import tensorflow as tf

from kqrobust import validation

STRATEGIES = ("auto", "default", "mirrored", "tpu", "multiworker")


def _tpu_strategy(tpu):
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def _tpu_present(tpu):
    """A TPU is named, announced by the environment, or attached (TPU VM)."""
    return bool(
        tpu
        or os.environ.get("TPU_NAME")
        or os.environ.get("COLAB_TPU_ADDR")
        or os.path.exists("/dev/accel0")
        or os.path.exists("/dev/vfio/0")
    )


def get_strategy(name="auto", tpu=None):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: "auto" (a TPU if one is present, then all GPUs with
            MirroredStrategy when there are several, else the default
            one-device strategy), "default", "mirrored", "tpu" or
            "multiworker" (MultiWorkerMirroredStrategy; reads TF_CONFIG).
        tpu: TPU name or address for "tpu"/"auto" ("local" on a TPU VM).

    Example:
        >>> strategy = kq.distribute.get_strategy("default")
        >>> strategy.num_replicas_in_sync
        1

    Build and compile the model under `strategy.scope()`; docs/distributed.md
    runs it.
    """
    validation.known(name, "strategy", list(STRATEGIES))
    if name == "auto":
        if _tpu_present(tpu):
            return _tpu_strategy(tpu or "local")
        if len(tf.config.list_logical_devices("GPU")) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "tpu":
        return _tpu_strategy(tpu or "local")
    return tf.distribute.MultiWorkerMirroredStrategy()


def global_batch_size(per_replica_batch, strategy):
    """The global batch: per-replica batch times the replicas in sync."""
    return per_replica_batch * strategy.num_replicas_in_sync


def scaled_learning_rate(base_lr, global_batch, reference_batch=128):
    """Linear scaling rule: `base_lr * global_batch / reference_batch`."""
    return base_lr * global_batch / reference_batch
