"""Timing helpers shared by the benchmark scripts: ratios measured in one run."""

import platform
import statistics
import time

import keras
import numpy as np
import tensorflow as tf


def machine_description():
    """One line naming the machine and the stack."""
    import os

    gpus = len(tf.config.list_physical_devices("GPU"))
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{gpus} GPU(s), TF {tf.__version__}, Keras {keras.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def add_compile_flags(parser):
    """`--jit_compile` and `--mixed_precision`, for reproducing the ratios on a GPU."""
    parser.add_argument(
        "--jit_compile",
        action="store_true",
        help="compile the train steps with XLA (model.compile(jit_compile=True))",
    )
    parser.add_argument(
        "--mixed_precision",
        action="store_true",
        help="build the models under the mixed_float16 policy",
    )


def apply_compile_flags(args):
    """Sets the dtype policy before any model is built; returns a description."""
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    return f"jit_compile={args.jit_compile}, policy={keras.mixed_precision.global_policy().name}"


def compiled_train_step(model, optimizer="sgd", jit_compile=False):
    """Compiles `model` for classification; returns a function running one step."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )

    def step(x, y):
        model.train_on_batch(x, y)

    return step


def interleaved_median_times(steps, x, y, repeats=15, warmup=3):
    """Median seconds per call of each step function, run round-robin.

    Interleaving the candidates spreads the noise of a shared machine over
    all of them, so their ratio is meaningful even when absolute times drift.
    """
    for step in steps.values():
        for _ in range(warmup):
            step(x, y)
    times = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step(x, y)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def random_batch(input_shape, batch_size, num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size,) + tuple(input_shape)).astype("float32")
    y = rng.integers(0, num_classes, batch_size).astype("int32")
    return x, y


def cifar_resnet20(batch_size, seed=0):
    """`(x, y, model)`: a random CIFAR-shaped batch and a built float ResNet-20."""
    from kqrobust import models

    keras.utils.set_random_seed(seed)
    x, y = random_batch((32, 32, 3), batch_size, seed=seed)
    model = models.resnet20()
    model(x[:2])
    return x, y, model


def rotated_round_times(steps, x, y, repeats, warmup=2):
    """Seconds per call of each step, per round; round-robin, order rotated each round."""
    names = list(steps)
    for name in names:
        for _ in range(warmup):
            steps[name](x, y)
    times = {name: [] for name in names}
    for round_index in range(repeats):
        k = round_index % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            steps[name](x, y)
            times[name].append(time.perf_counter() - start)
    return times
