"""Train-step cost of the robust-training recipes over LSQ QAT, in one process.

    python benchmarks/robust_overhead.py [--batch_size 128] [--repeats 15]
        [--recipes lsq,sam,...] [--jit_compile] [--mixed_precision]

Model: the CIFAR-shaped ResNet-20 (`kq.models.resnet20`) at W4A4, random
data, SGD. Candidates are timed round-robin, rotating the order every round,
and compared with the plain LSQ step of the same model. Goals:
  - SymReg + SatNL over LSQ alone: <= 1.05 (the paper reports +2.53%);
  - SAM and ASAM over a plain (LSQ) step: <= 2.1 (the later, stricter goal: ASAM <= 2.05);
  - FPQ (SFP + CSD, with its teacher forward) over LSQ: <= 1.6 (the later, stricter goal: <= 1.5).
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

import kqrobust as kq  # noqa: E402

import common  # noqa: E402

CANDIDATES = {
    "lsq": "lsq",
    "symreg+satnl": kq.Recipe(name="symreg_satnl", satnl_alpha=1.0, symreg=(0.1, 0.1)),
    "sam": "sam",
    "asam": "asam",
    "fpq": "fpq",
}
GOALS = {"symreg+satnl": 1.05, "sam": 2.1, "asam": 2.05, "fpq": 1.5}


def rotated_median_times(steps, x, y, repeats, warmup=2):
    """Median seconds per step of each candidate, timed round-robin.

    As `common.interleaved_median_times`, but each round starts at a
    different candidate, so none is always timed right after the heaviest
    one (on this shared CPU the position in the round biased the first
    candidate by tens of percent).
    """
    times = common.rotated_round_times(steps, x, y, repeats, warmup)
    return {name: statistics.median(ts) for name, ts in times.items()}


def symreg_satnl_cost(model, repeats=50):
    """Median seconds of SatNL + SymReg and their gradients over every kernel.

    The work the `symreg+satnl` recipe adds to a step, timed alone: on a
    shared CPU it resolves a few percent, which two whole-step timings do not.
    """
    kernels = [layer.kernel for layer in model.layers if hasattr(layer, "kernel")]
    satnl = kq.transforms.SatNL(1.0)
    reg = kq.regularizers.SymReg(0.1, 0.1)

    @tf.function
    def cost():
        with tf.GradientTape() as tape:
            total = tf.add_n([reg(satnl(k)) for k in kernels])
        return tape.gradient(total, kernels)

    for _ in range(3):
        cost()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        cost()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--recipes",
        default=",".join(CANDIDATES),
        help="comma-separated subset of the candidates (lsq is always timed)",
    )
    common.add_compile_flags(parser)
    args = parser.parse_args()
    setting = common.apply_compile_flags(args)

    x, y, float_model = common.cifar_resnet20(args.batch_size)
    steps = {}
    chosen = ["lsq"] + [n for n in args.recipes.split(",") if n != "lsq"]
    unknown = sorted(set(chosen) - set(CANDIDATES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; choose from {list(CANDIDATES)}")
    for name in chosen:
        recipe = CANDIDATES[name]
        qmodel = kq.quantize_model(float_model, recipe=recipe, weight_bits=4, activation_bits=4)
        steps[name] = common.compiled_train_step(qmodel, jit_compile=args.jit_compile)
    times = rotated_median_times(steps, x, y, repeats=args.repeats)
    print(f"machine: {common.machine_description()}")
    print(
        f"resnet20 W4A4, batch {args.batch_size}, median of {args.repeats} interleaved steps, "
        f"{setting}"
    )
    print("| recipe | ms / step | ratio to lsq | goal |")
    print("|---|---|---|---|")
    for name, seconds in times.items():
        ratio = seconds / times["lsq"]
        goal = GOALS.get(name)
        verdict = (
            "" if goal is None else (f"<= {goal:.2f}: {'met' if ratio <= goal else 'NOT met'}")
        )
        print(f"| {name} | {1000 * seconds:.1f} | {ratio:.2f} | {verdict} |")
    added = symreg_satnl_cost(float_model)
    print(
        f"SatNL + SymReg (+ gradients) over every kernel, alone: {1000 * added:.1f} ms "
        f"= {100 * added / times['lsq']:.1f}% of the lsq step"
    )


if __name__ == "__main__":
    main()
