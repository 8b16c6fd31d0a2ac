"""FPQ's logged loss terms under MirroredStrategy on two logical CPUs.

Run as a script (logical devices must be configured before TF initialises):
    python tests/training/csd_mirrored.py
One zero-learning-rate step on a global batch of 64 (32 per replica). Prints
one JSON line: the logged `task_loss`, `csd_loss` and `loss`; the same
computed outside the strategy as the mean over the two halves of the batch
(each replica standardises with its own half's statistics and runs
BatchNorm on its own half); and the CSD of the whole batch at once.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kqrobust as kq  # noqa: E402


def np_csd(students, teachers, eps=1e-5):
    """`sum_layers sum_channels mean (z~_t - z~_s)^2`, statistics per channel."""
    total = 0.0
    for z_s, z_t in zip(students, teachers):

        def standardize(z):
            z = np.asarray(z, np.float64)
            axes = tuple(range(z.ndim - 1))
            return (z - z.mean(axes)) / np.sqrt(z.var(axes) + eps)

        total += np.mean((standardize(z_t) - standardize(z_s)) ** 2, axis=(0, 1, 2)).sum()
    return total


def terms(qmodel, x, y):
    student, teacher = qmodel._csd_models()
    outputs, features = student(x, training=True)
    ce = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, outputs[0]))
    return ce, 0.5 * np_csd(features, teacher(x, training=False))


def main():
    keras.utils.set_random_seed(0)
    (x, y), _ = kq.datasets.load_digits()
    x, y = x[:64], y[:64]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe=kq.Recipe(csd_weight=0.5))
        qmodel.compile(
            optimizer=keras.optimizers.SGD(0.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    qmodel.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)  # init the steps
    halves = [terms(qmodel, x[:32], y[:32]), terms(qmodel, x[32:], y[32:])]
    task, csd = np.mean(halves, axis=0)
    logged = qmodel.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0).history
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "logged": {name: logged[name][0] for name in ("task_loss", "csd_loss", "loss")},
                "expected": {"task_loss": task, "csd_loss": csd, "loss": task + csd},
                "global_batch_csd": terms(qmodel, x, y)[1],
            }
        )
    )


if __name__ == "__main__":
    main()
