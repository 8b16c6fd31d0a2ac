"""Runs a few QAT steps of a recipe under MirroredStrategy on two logical CPUs.

Run as a script (logical devices must be configured before TF initialises):
    python tests/pipeline/mirrored_steps.py RECIPE
Prints one JSON line with the losses and the replica count.
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
from kqrobust.pipeline.optim import paper_optimizer  # noqa: E402


def main(recipe):
    keras.utils.set_random_seed(0)
    (x, y), _ = kq.datasets.load_digits()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = kq.testing.small_cnn()
        qmodel = kq.quantize_model(model, recipe=recipe, weight_bits=4, activation_bits=4)
        qmodel.compile(
            optimizer=paper_optimizer(0.01, 1, 4, 1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    history = qmodel.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=0)
    losses = history.history["loss"]
    finite = bool(np.isfinite(losses).all()) and all(
        np.isfinite(v.numpy()).all() for v in qmodel.weights
    )
    print(
        json.dumps({"replicas": strategy.num_replicas_in_sync, "losses": losses, "finite": finite})
    )


if __name__ == "__main__":
    main(sys.argv[1])
