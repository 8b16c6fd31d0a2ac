"""SAM/ASAM under MirroredStrategy (2 logical CPUs) vs one device, same global batch.

Run as a script (logical devices must be configured before TF initialises):
    python tests/training/sam_mirrored_parity.py METHOD
Prints one JSON line: the largest absolute weight difference and the loss of each run.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kqrobust as kq  # noqa: E402


def float_cnn():
    """No BatchNorm: its per-replica batch statistics would differ by design."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="head")(x))


def run(strategy, method, x, y):
    with strategy.scope():
        rmodel = kq.robustify(float_cnn(), recipe=kq.Recipe(sam=method, rho=0.5))
        rmodel.compile(
            optimizer=keras.optimizers.SGD(0.1),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
    history = rmodel.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return [v.numpy() for v in rmodel.weights], history.history["loss"][0]


def main(method):
    (x, y), _ = kq.datasets.load_digits()
    x, y = x[:128], y[:128]
    one, loss_one = run(tf.distribute.OneDeviceStrategy("/cpu:0"), method, x, y)
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    two, loss_two = run(mirrored, method, x, y)
    init = [v.numpy() for v in float_cnn().weights]
    print(
        json.dumps(
            {
                "replicas": mirrored.num_replicas_in_sync,
                "max_diff": float(max(np.abs(a - b).max() for a, b in zip(one, two))),
                "max_update": float(max(np.abs(a - b).max() for a, b in zip(one, init))),
                "losses": [loss_one, loss_two],
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
