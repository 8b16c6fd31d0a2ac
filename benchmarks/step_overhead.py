"""Train-step cost of LSQ W4A4 QAT over float training, in one process.

    python benchmarks/step_overhead.py [--batch_size 128] [--repeats 15]
        [--jit_compile] [--mixed_precision] [--reference] [--layer_inputs]

Model: the CIFAR-shaped ResNet-20 (`kq.models.resnet20`), random data.
Goal (issues 2 and 15): quantized / float step time <= 1.3.
"""

import argparse
import functools
import os
from unittest import mock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


import kqrobust as kq  # noqa: E402
from kqrobust.ops import lsq_quantize  # noqa: E402
from kqrobust.quantizers import lsq as lsq_module  # noqa: E402

import common  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also time LSQ on the reference keras.ops path (before the fused LSQ gradient)",
    )
    parser.add_argument(
        "--layer_inputs",
        action="store_true",
        help="also time LSQ quantizing layer inputs only (cover_int8_tensors=False), the cost of "
        "quantizing every tensor of the int8 file in the same run",
    )
    common.add_compile_flags(parser)
    args = parser.parse_args()
    setting = common.apply_compile_flags(args)

    x, y, float_model = common.cifar_resnet20(args.batch_size)
    quant_model = kq.quantize_model(float_model, recipe="lsq", weight_bits=4, activation_bits=4)
    steps = {
        "float": common.compiled_train_step(float_model, jit_compile=args.jit_compile),
        "lsq_w4a4": common.compiled_train_step(quant_model, jit_compile=args.jit_compile),
    }
    if args.layer_inputs:
        inputs_only = kq.quantize_model(
            float_model, recipe="lsq", weight_bits=4, activation_bits=4, cover_int8_tensors=False
        )
        steps["lsq_w4a4_layer_inputs"] = common.compiled_train_step(
            inputs_only, jit_compile=args.jit_compile
        )
    if args.reference:
        # The same LSQ model traced on the fused path (exact in every autodiff
        # mode; what the probes use) and on the reference path (before issue
        # 15); each traced step keeps its path (the default step traces with
        # the kernel path).
        for implementation in ("fused", "reference"):
            name = f"lsq_w4a4_{implementation}"
            other = kq.quantize_model(float_model, recipe="lsq", weight_bits=4, activation_bits=4)
            steps[name] = common.compiled_train_step(other, jit_compile=args.jit_compile)
            patched = functools.partial(lsq_quantize, implementation=implementation)
            with mock.patch.object(lsq_module, "lsq_quantize", patched):
                steps[name](x, y)
    times = common.interleaved_median_times(steps, x, y, repeats=args.repeats)
    ratio = times["lsq_w4a4"] / times["float"]
    print(f"machine: {common.machine_description()}")
    print(
        f"resnet20, batch {args.batch_size}, median of {args.repeats} interleaved steps, {setting}"
    )
    print("| model | ms / step | ratio to float |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {1000 * seconds:.1f} | {seconds / times['float']:.2f} |")
    print(f"goal <= 1.30: {'met' if ratio <= 1.3 else 'NOT met'} ({ratio:.2f})")


if __name__ == "__main__":
    main()
