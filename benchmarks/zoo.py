"""Model-zoo benchmark: float, QAT and LiteRT accuracy, agreement, size and latency per model.

Runs the acceptance cases of `tests/zoo/` (`kq.testing.zoo`) at W8A8 and W4A8 and writes
`docs/results/zoo.md`: one row per model and bit-width. Latency is int8 over float LiteRT,
the two files timed round-robin in one run (batch 1, one thread).

    .venv/bin/python benchmarks/zoo.py          # every model (about an hour on 2 cores)
    .venv/bin/python benchmarks/zoo.py --models vit_block,kws_conv1d --out /tmp/zoo.md
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kqrobust.datasets import load_digits  # noqa: E402
from kqrobust.testing import zoo  # noqa: E402

from common import machine_description  # noqa: E402


def _row(r):
    ops = ", ".join(r["float_ops"]) or "none"
    latency = f"{r['latency_ratio']:.2f}" if "latency_ratio" in r else ""
    return (
        f"| {r['model']} | W{r['weight_bits']}A8 | {100 * r['float_accuracy']:.1f} "
        f"| {100 * r['qat_accuracy']:.1f} | {100 * r['litert_accuracy']:.1f} "
        f"| {100 * r['agreement']:.1f}% | {100 * r['kernel_agreement']:.1f}% "
        f"| {r['quantized_layers']}/{r['kernel_layers']} "
        f"| {r['size_ratio']:.2f} | {latency} | {ops} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(zoo.ZOO))
    parser.add_argument("--bits", default="8,4")
    parser.add_argument("--out", default=os.path.join("docs", "results", "zoo.md"))
    parser.add_argument("--json", default=None, help="also write the raw results here")
    args = parser.parse_args()
    digits = load_digits()
    results = []
    for name in args.models.split(","):
        entry = zoo.ZOO[name]  # the acceptance test's schedule
        float_epochs, qat_epochs = entry.float_epochs, entry.qat_epochs
        start = time.perf_counter()
        print(f"[{name}] float training, {float_epochs} epochs", flush=True)
        model = zoo.train_float(name, digits, float_epochs)
        for bits in (int(b) for b in args.bits.split(",")):
            print(f"[{name}] W{bits}A8 QAT, {qat_epochs} epochs, export, LiteRT", flush=True)
            result = zoo.run_case(name, model, digits, bits, latency=True)
            result["seconds"] = time.perf_counter() - start
            print(_row(result), flush=True)
            results.append(result)
            _write(args, results)  # after every case: a long run leaves what it measured
    print(f"wrote {args.out}")


def _write(args, results):
    lines = [
        "# Model zoo on digits",
        "",
        f"Command: `.venv/bin/python benchmarks/zoo.py --models {args.models} --bits {args.bits}`",
        f"Machine: {machine_description()}.",
        "",
        "Every model with Keras' default hyperparameters, trained float on the bundled digits "
        "(upsampled to 32x32x3 for `keras.applications`, `weights=None`), quantized with "
        '`kq.quantize_model(model, "lsq", weight_bits=W, activation_bits=8)` (first and last '
        "layers at 8 bits), a few epochs of QAT, then full-int8 TFLite run in LiteRT on all 359 "
        "test digits. Agreement: LiteRT's argmax against the Keras QAT model's. LiteRT kernels: "
        "the argmax agreement of LiteRT's default (XNNPACK) kernels with its builtin kernels "
        "on the same int8 file, the runtime against itself. Size and latency:"
        " the int8 file against the float file of the same model (latency at batch 1, one thread,"
        " timed round-robin in one run).",
        "",
        "| model | bits | float % | QAT % | LiteRT % | agreement | LiteRT kernels | "
        "kernel layers quantized "
        "| size vs float | latency vs float | float ops in the int8 file |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ] + [_row(r) for r in results]
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
