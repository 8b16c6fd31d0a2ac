"""Cost of one Hutchinson probe over one gradient evaluation, in one process.

    python benchmarks/hessian_probe.py [--batch_size 128] [--repeats 15]

Model: the CIFAR-shaped ResNet-20 (`kq.models.resnet20`), float and LSQ W4A4,
random data, inference mode (as the probes run). A probe is one Hessian-vector
product plus the dot product `v^T H v` (`kq.probes.Objective`, the code
`kq.probes.hessian_trace` runs per batch); a gradient evaluation is the
loss and its gradient on the same batch. Both are compiled `tf.function`s,
timed round-robin (medians).
Goal: probe / gradient <= 3.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust.probes.hutchinson import rademacher  # noqa: E402

import common  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _steps(name, model):
    """`{label: step(x, y)}`: the gradient and one probe per HVP method."""
    forward = kq.probes.Objective(model, loss=LOSS, method="forward")
    reverse = kq.probes.Objective(model, loss=LOSS, method="reverse")
    shapes = [tuple(v.shape) for v in forward.variables]
    vector = [tf.constant(v) for v in rademacher(np.random.default_rng(0), shapes)]

    def gradient(x, y):
        forward.batch_gradient(x, y)[0].numpy()

    def probe(objective):
        def run(x, y):
            products = objective.batch_hvp(x, y, vector)
            float(tf.add_n([tf.reduce_sum(p * v) for p, v in zip(products, vector)]))

        return run

    return {
        f"{name} gradient": gradient,
        f"{name} probe (forward-over-reverse)": probe(forward),
        f"{name} probe (nested tapes)": probe(reverse),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    x, y, float_model = common.cifar_resnet20(args.batch_size)
    x, y = tf.constant(x), tf.constant(y)
    quant_model = kq.quantize_model(
        float_model, recipe="lsq", weight_bits=4, activation_bits=4, calibration_data=x
    )
    steps = {**_steps("float", float_model), **_steps("lsq_w4a4", quant_model)}
    times = common.interleaved_median_times(steps, x, y, repeats=args.repeats)
    print(f"machine: {common.machine_description()}")
    print(
        f"resnet20 ({float_model.count_params()} parameters), batch {args.batch_size}, "
        f"median of {args.repeats} interleaved calls"
    )
    print("| model | computation | ms / call | ratio to gradient |")
    print("|---|---|---|---|")
    ratios = []
    for label, seconds in times.items():
        model_name, what = label.split(" ", 1)
        ratio = seconds / times[f"{model_name} gradient"]
        if what != "gradient":
            ratios.append((label, ratio))
        print(f"| {model_name} | {what} | {1000 * seconds:.1f} | {ratio:.2f} |")
    for label, ratio in ratios:
        print(f"goal <= 3.0 for {label}: {'met' if ratio <= 3.0 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
