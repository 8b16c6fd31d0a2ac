"""Cost of one LSQ activation quantizer (forward + backward), per implementation.

    python benchmarks/quantizer_passes.py [--repeats 40] [--shape 128,32,32,16]

One 4-bit unsigned per-tensor quantizer on a ResNet-20-sized activation, inside
a compiled `tf.function` computing `sum(w * q(x))` and its gradients in `x` and
the step. Candidates, timed round-robin with the order rotated every round:
  - `baseline`: `x * s` (the loss and its gradient without a quantizer);
  - `reference` / `fused` / `kernel`: `kq.ops.lsq_quantize(..., implementation=...)`;
  - `*_xla`: the same quantizer alone in a `tf.function(jit_compile=True)`;
  - `tf_fake_quant`: TF's fused `fake_quant_with_min_max_vars` (tfmot's kernel;
    its second derivatives are wrong, listed for the pass count only).
Reported: ms per call and the quantizer's cost over the baseline.
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kqrobust.ops import lsq_quantize  # noqa: E402

import common  # noqa: E402


def candidates():
    def lsq(implementation):
        return lambda x, s: lsq_quantize(
            x, s, 4, signed=False, grad_scale=0.01, implementation=implementation
        )

    out = {
        "baseline": lambda x, s: x * s,
        "reference": lsq("reference"),
        "fused": lsq("fused"),
        "kernel": lsq("kernel"),
        "tf_fake_quant": lambda x, s: tf.quantization.fake_quant_with_min_max_vars(
            x, 0.0 * s, 15.0 * s, num_bits=4
        ),
    }
    out["reference_xla"] = tf.function(out["reference"], jit_compile=True)
    out["fused_xla"] = tf.function(out["fused"], jit_compile=True)
    out["kernel_xla"] = tf.function(out["kernel"], jit_compile=True)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--shape", default="128,32,32,16")
    args = parser.parse_args()
    shape = tuple(int(d) for d in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=shape).astype("float32"))
    w = tf.constant(rng.normal(size=shape).astype("float32"))
    s = tf.Variable(0.1)

    def make(quantizer):
        @tf.function
        def step():
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(w * quantizer(x, s))
            return tape.gradient(loss, [x, s])

        return lambda: step()[1].numpy()

    steps = {name: make(q) for name, q in candidates().items()}
    names = list(steps)
    for name in names:
        for _ in range(3):
            steps[name]()
    times = {name: [] for name in names}
    for r in range(args.repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    medians = {name: 1000 * statistics.median(t) for name, t in times.items()}
    print(f"machine: {common.machine_description()}")
    print(f"shape {shape}, median of {args.repeats} rotated rounds")
    print("| candidate | ms / call | quantizer ms (over baseline) |")
    print("|---|---|---|")
    for name, ms in medians.items():
        print(f"| {name} | {ms:.2f} | {ms - medians['baseline']:.2f} |")


if __name__ == "__main__":
    main()
