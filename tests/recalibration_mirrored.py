"""QAT of a recipe under MirroredStrategy on two logical CPUs, then predict vs training mode.

Run as a script (logical devices must be configured before TF initialises):
    python tests/recalibration_mirrored.py RECIPE
Prints one JSON line: replicas, training-mode and predict accuracy on the test set.
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


def main(recipe):
    keras.utils.set_random_seed(0)
    (x, y), (x_test, y_test) = kq.datasets.load_digits()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with strategy.scope():
        model = kq.testing.small_cnn()
        model.compile("adam", loss)
    model.fit(x, y, epochs=6, verbose=0)
    with strategy.scope():
        qmodel = kq.quantize_model(model, recipe=recipe, weight_bits=4, activation_bits=4)
        qmodel.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(2048, seed=0).batch(64)
    qmodel.fit(dataset, epochs=5, verbose=0)
    predicted = float(np.mean(np.argmax(qmodel.predict(x_test, verbose=0), -1) == y_test))
    training_mode = float(np.mean(np.argmax(qmodel(x_test, training=True), -1) == y_test))
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "training_mode": training_mode,
                "predict": predicted,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1])
