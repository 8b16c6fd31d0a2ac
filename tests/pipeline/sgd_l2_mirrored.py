"""SGDWithL2 under MirroredStrategy on two logical CPUs against one device.

Run as a script (logical devices must be configured before TF initialises):
    python tests/pipeline/sgd_l2_mirrored.py
Prints one JSON line: the replica count, the largest kernel difference
between the two runs, and how far the L2 term moved the kernel.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from kqrobust.pipeline.optim import paper_optimizer  # noqa: E402


def train(strategy, l2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 6)).astype("float32")
    y = rng.normal(size=(128, 3)).astype("float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
        model.layers[0].kernel.assign(rng.normal(size=(6, 3)).astype("float32"))
        model.compile(optimizer=paper_optimizer(0.05, 1, 4, l2), loss="mse")
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    return model.layers[0].kernel.numpy()


def main():
    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = tf.distribute.OneDeviceStrategy("/cpu:0")
    kernels = train(mirrored, 0.1), train(one, 0.1)
    print(
        json.dumps(
            {
                "replicas": mirrored.num_replicas_in_sync,
                "max_diff": float(np.abs(kernels[0] - kernels[1]).max()),
                "l2_effect": float(np.abs(kernels[1] - train(one, 0.0)).max()),
            }
        )
    )


if __name__ == "__main__":
    main()
