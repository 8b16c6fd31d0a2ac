"""SFP noise on two replicas of a MirroredStrategy (two logical CPUs).

Run as a script (logical devices must be configured before TF initialises):
    python tests/transforms/sfp_mirrored.py
Prints one JSON line: whether the replicas' noise differs (within a step and
between steps) and whether the generator state stays the same on both.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import numpy as np  # noqa: E402

import kqrobust as kq  # noqa: E402


def main():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        sfp = kq.transforms.SFP(1.0, seed=7)
    x = tf.zeros((256,))

    @tf.function
    def step():
        return strategy.run(lambda: sfp(x, tf.constant(0.2)))

    draws = [[t.numpy() for t in strategy.experimental_local_results(step())] for _ in range(2)]
    states = [
        s.numpy().tolist()
        for s in strategy.experimental_local_results(sfp.seed_generator.state.value)
    ]
    print(
        json.dumps(
            {
                "replicas": strategy.num_replicas_in_sync,
                "replicas_differ": all(not np.array_equal(a, b) for a, b in draws),
                "steps_differ": not np.array_equal(draws[0][0], draws[1][0]),
                "states_in_sync": states[0] == states[1],
                "state": states[0],
            }
        )
    )


if __name__ == "__main__":
    main()
