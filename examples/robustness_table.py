"""Park et al.'s Table 2 trend on real data: baseline vs robustified, ACIQ weights at 4/3/2 bits.

    python examples/robustness_table.py [--seeds 8] [--epochs 40] \
        [--out docs/results/robustness_table.md]

For each seed, on the bundled digits (1,797 real 8x8 images; 1,438 train,
359 test), trains the same CNN twice from the same initialisation:
  - baseline: plain float training (Adam);
  - robust: `kq.robustify(model, recipe="robust")` (SymReg + SatNL + ASAM,
    the paper's "All"), same optimizer and epochs.
The CNN keeps Keras' default BatchNorm momentum (0.99), so both fits end
with `kq.callbacks.BatchNormRecalibration` (Nagel et al., ICML 2022,
sec. 4.1): the moving statistics describe the final weights. `robustify`'s
model does this on its own; the float baseline needs the callback.
Then quantizes the weights of each with ACIQ (Laplace) at 4, 3 and 2 bits,
activations float, first and last layers at 8 bits (the paper's common
practice), no fine-tuning, and prints test accuracy as mean ± std over the
seeds, in the shape of Table 2 of Park, Jang & Park, "Symmetry
Regularization and Saturating Nonlinearity for Robust Quantization",
ECCV 2022. `--out` also writes the table and the raw per-seed numbers as
Markdown.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust import evaluate  # noqa: E402
from kqrobust.datasets import load_digits  # noqa: E402
from kqrobust.testing import small_cnn  # noqa: E402

BITS = (4, 3, 2)
ROWS = (("baseline", "Baseline"), ("robust", "+ SymReg + SatNL + ASAM (All)"))


def train(model, x, y, epochs, learning_rate, seed):
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    # Re-estimate BatchNorm statistics for the final weights (automatic for the
    # robustified QuantModel; a float model trained at momentum 0.99 needs it).
    model.fit(
        x,
        y,
        batch_size=64,
        epochs=epochs,
        verbose=0,
        callbacks=[kq.callbacks.BatchNormRecalibration(x, batch_size=64)],
    )
    return model


def run_seed(seed, args, data):
    (x_train, y_train), (x_test, y_test) = data
    results = {}
    for key, _ in ROWS:
        model = small_cnn(width=args.width, seed=seed)
        if key == "robust":
            model = kq.robustify(model, recipe="robust")
        train(model, x_train, y_train, args.epochs, args.learning_rate, seed)
        rows = evaluate.bitwidth_sweep(
            model,
            (x_test, y_test),
            weight_bits=BITS,
            method="aciq_laplace",
            calibration_data=x_train[:256],
            first_last_bits=args.first_last_bits,
        )
        results[key] = [100 * r["accuracy"] for r in rows]  # FP, 4, 3, 2
    return results


def markdown_table(per_seed):
    header = "| method | FP | " + " | ".join(f"{b}-bit" for b in BITS) + " |"
    lines = [header, "|---|" + "---|" * (1 + len(BITS))]
    for key, label in ROWS:
        values = np.array([seed[key] for seed in per_seed])
        cells = [f"{m:.2f} ± {s:.2f}" for m, s in zip(values.mean(0), values.std(0))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8, help="independent trainings per row")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--width", type=int, default=32, help="small_cnn width")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--first_last_bits", type=int, default=8)
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    args = parser.parse_args()
    data = load_digits()
    start = time.time()
    per_seed = []
    for seed in range(args.seeds):
        per_seed.append(run_seed(seed, args, data))
        print(
            f"seed {seed}: "
            + "; ".join(
                f"{key} " + " / ".join(f"{v:.2f}" for v in per_seed[-1][key]) for key, _ in ROWS
            ),
            flush=True,
        )
    table = markdown_table(per_seed)
    print(table)
    minutes = (time.time() - start) / 60
    print(f"{args.seeds} seeds in {minutes:.1f} min")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        raw = [
            "| seed | method | FP | " + " | ".join(f"{b}-bit" for b in BITS) + " |",
            "|---|---|---|" + "---|" * len(BITS),
        ]
        for seed, result in enumerate(per_seed):
            for key, _ in ROWS:
                raw.append(
                    f"| {seed} | {key} | " + " | ".join(f"{v:.2f}" for v in result[key]) + " |"
                )
        with open(args.out, "w") as f:
            f.write(
                f"<!-- generated by: python examples/robustness_table.py --seeds "
                f"{args.seeds} --epochs {args.epochs} --width {args.width} "
                f"--learning_rate {args.learning_rate} --first_last_bits "
                f"{args.first_last_bits} ({minutes:.1f} min) -->\n\n"
                f"{table}\n\nPer seed (test accuracy, %):\n\n" + "\n".join(raw) + "\n"
            )


if __name__ == "__main__":
    main()
