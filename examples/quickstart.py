"""The offline demo: float training on the bundled digits, LSQ QAT, a results table.

    python examples/quickstart.py --out_dir runs/demo [--fast]

Runs in a few minutes on 2 CPU cores with no network: it trains a small CNN
(Conv+BN+ReLU, depthwise, a residual Add, pooling, Dense) in float, then
quantization-aware training with the `lsq` recipe at W8A8, W4A4 and W2A2,
and prints float against quantized test accuracy. The models are saved as
`.keras` files in `--out_dir`.
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust.datasets import load_digits  # noqa: E402
from kqrobust.testing import small_cnn  # noqa: E402


def compile_for_classification(model, learning_rate):
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out_dir", default="runs/demo", help="where models and results go")
    parser.add_argument("--fast", action="store_true", help="a few epochs only (CI smoke test)")
    parser.add_argument("--recipe", default="lsq", help="QAT recipe (a preset name)")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    float_epochs, qat_epochs = (2, 1) if args.fast else (30, 8)

    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_test, y_test) = load_digits()
    start = time.time()
    model = small_cnn(width=32)
    compile_for_classification(model, 3e-3)
    print(f"Float training: {float_epochs} epochs on {len(x_train)} digits")
    model.fit(x_train, y_train, batch_size=64, epochs=float_epochs, verbose=2)
    model.save(os.path.join(args.out_dir, "float.keras"))
    rows = [("float", "32/32", model.evaluate(x_test, y_test, verbose=0)[1])]

    for bits in (8, 4, 2):
        qmodel = kq.quantize_model(model, recipe=args.recipe, weight_bits=bits, activation_bits=bits)
        compile_for_classification(qmodel, 1e-3)
        before = qmodel.evaluate(x_test, y_test, verbose=0)[1]
        print(f"QAT '{args.recipe}' W{bits}A{bits}: {qat_epochs} epochs")
        qmodel.fit(x_train, y_train, batch_size=64, epochs=qat_epochs, verbose=2)
        qmodel.save(os.path.join(args.out_dir, f"{args.recipe}_w{bits}a{bits}.keras"))
        rows.append((f"{args.recipe} before QAT", f"{bits}/{bits}", before))
        rows.append((f"{args.recipe} after QAT", f"{bits}/{bits}", qmodel.evaluate(x_test, y_test, verbose=0)[1]))

    lines = ["| model | W/A bits | test accuracy |", "|---|---|---|"]
    lines += [f"| {name} | {bits} | {100 * acc:.2f}% |" for name, bits, acc in rows]
    table = "\n".join(lines)
    print("\n" + table)
    print("(first and last layers stay at 8 bits, as in the LSQ and FPQ papers)")
    with open(os.path.join(args.out_dir, "results.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out_dir, "results.json"), "w") as f:
        json.dump([{"model": n, "bits": b, "accuracy": a} for n, b, a in rows], f, indent=2)
    print(f"\nDone in {time.time() - start:.0f} s. Models and results in {args.out_dir}/")


if __name__ == "__main__":
    main()
