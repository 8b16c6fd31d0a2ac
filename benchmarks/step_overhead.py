"""Train-step cost of LSQ W4A4 QAT over float training, in one process.

    python benchmarks/step_overhead.py [--batch_size 128] [--repeats 15]

Model: the CIFAR-shaped ResNet-20 (`kq.models.resnet20`), random data.
Goal (issue 2): quantized / float step time <= 1.3.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import kqrobust as kq  # noqa: E402

import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    x, y, float_model = common.cifar_resnet20(args.batch_size)
    quant_model = kq.quantize_model(float_model, recipe="lsq", weight_bits=4, activation_bits=4)
    steps = {
        "float": common.compiled_train_step(float_model),
        "lsq_w4a4": common.compiled_train_step(quant_model),
    }
    times = common.interleaved_median_times(steps, x, y, repeats=args.repeats)
    ratio = times["lsq_w4a4"] / times["float"]
    print(f"machine: {common.machine_description()}")
    print(f"resnet20, batch {args.batch_size}, median of {args.repeats} interleaved steps")
    print("| model | ms / step | ratio to float |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1000 * seconds:.1f} | {seconds / times['float']:.2f} |")
    print(f"goal <= 1.30: {'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
