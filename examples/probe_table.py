"""Hessian trace and QGen measures of LSQ, FPQ and robust QAT on digits, in one table.

    python examples/probe_table.py [--seeds 2] [--float_epochs 20] [--qat_epochs 10] \
        [--out docs/results/probes.md]

For each seed, on the bundled digits (1,438 train / 359 test real 8x8
images): trains `small_cnn` in float (Adam), ending the float fit with
`kq.callbacks.BatchNormRecalibration` (the CNN keeps Keras' default
BatchNorm momentum 0.99, so the moving statistics are re-estimated for the
final weights; Nagel et al., "Overcoming Oscillations in Quantization-Aware
Training", ICML 2022, sec. 4.1; the QAT models do this on their own), then
fine-tunes three W4A4
copies of it (first/last layers 8 bits) with `kq.quantize_model` and the
presets `lsq`, `fpq` (LSQ + SFP + CSD) and `robust` (LSQ + SymReg + SatNL +
ASAM), same optimizer and epochs. On each QAT model it measures, with
kqrobust's defaults unless stated:
  - test accuracy, and the generalization gap (train - test accuracy);
  - `hessian_trace` of the training loss with respect to the kernels (on
    `--probe_samples` training samples, tol 1e-3, at most 100 probes);
  - PAC-Bayes flatness 1/sigma'^2, its magnitude-aware variant and
    worst-case sharpness 1/alpha'^2 (Jiang et al., "Fantastic
    Generalization Measures and Where to Find Them", ICLR 2020, as used by
    AskariHemmat et al., "QGen: On the Ability to Generalize in
    Quantization Aware Training": bisection on [0, 2], depth 15, tolerance
    1e-2, 10 draws, eps 1e-3; 20 ascent steps), on
    `--probe_samples` training samples, BatchNorm folded;
  - the mean accuracy over the five corruptions at severities 1..5.
Prints mean ± std over seeds; `--out` writes the table and the per-seed rows.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust.datasets import load_digits  # noqa: E402
from kqrobust.testing import small_cnn  # noqa: E402

RECIPES = ("lsq", "fpq", "robust")
COLUMNS = (
    ("test_accuracy", "test acc (%)", 100.0),
    ("accuracy_gap", "gap (pts)", 100.0),
    ("hessian_trace", "Tr(H)", 1.0),
    ("pac_bayes_flatness", "PAC-Bayes 1/σ'²", 1.0),
    ("magnitude_pac_bayes_flatness", "mag. PAC-Bayes 1/σ'²", 1.0),
    ("worst_case_sharpness", "sharpness 1/α'²", 1.0),
    ("corruption_accuracy", "corrupted acc (%)", 100.0),
)
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def fit(model, x, y, epochs, learning_rate, seed, callbacks=()):
    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=LOSS, metrics=["accuracy"])
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0, callbacks=list(callbacks))
    return model


def measure(model, train, test, args, seed):
    probe_train = (train[0][: args.probe_samples], train[1][: args.probe_samples])
    row = {}
    trace = kq.probes.hessian_trace(model, probe_train, variables="kernels", seed=seed, verbose=0)
    row["hessian_trace"] = trace.estimate
    row["hessian_trace_std_error"] = trace.std_error
    measures = kq.probes.generalization_measures(
        model,
        probe_train,
        test,
        depth=args.depth,
        num_samples=args.num_samples,
        ascent_steps=args.ascent_steps,
        seed=seed,
        verbose=0,
    )
    gap = kq.probes.generalization_gap(model, train, test)
    row["test_accuracy"] = gap["test_accuracy"]
    row["accuracy_gap"] = gap["accuracy_gap"]
    for key in ("pac_bayes_flatness", "magnitude_pac_bayes_flatness", "worst_case_sharpness"):
        row[key] = measures[key]
    row["corruption_accuracy"] = kq.probes.corruption_robustness(model, test, seed=seed, verbose=0)[
        "mean_corruption_accuracy"
    ]
    return row


def run_seed(seed, args, data):
    (x_train, y_train), test = data
    # Re-estimate BatchNorm statistics for the final float weights (automatic
    # for the QuantModels below; a float model at momentum 0.99 needs it).
    float_model = fit(
        small_cnn(width=args.width, seed=seed),
        x_train,
        y_train,
        args.float_epochs,
        args.learning_rate,
        seed,
        callbacks=[kq.callbacks.BatchNormRecalibration(x_train, batch_size=64)],
    )
    rows = {}
    for recipe in RECIPES:
        start = time.time()
        qmodel = kq.quantize_model(float_model, recipe=recipe, weight_bits=4, activation_bits=4)
        fit(qmodel, x_train, y_train, args.qat_epochs, args.qat_learning_rate, seed)
        rows[recipe] = measure(qmodel, (x_train, y_train), test, args, seed)
        print(
            f"seed {seed} {recipe}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in rows[recipe].items())
            + f" ({time.time() - start:.0f} s)",
            flush=True,
        )
    return rows


def markdown_table(per_seed):
    lines = [
        "| recipe | " + " | ".join(label for _, label, _ in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for recipe in RECIPES:
        cells = []
        for key, _, scale in COLUMNS:
            values = scale * np.array([seed[recipe][key] for seed in per_seed])
            cells.append(f"{values.mean():.3g} ± {values.std():.2g}")
        lines.append(f"| {recipe} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--float_epochs", type=int, default=20)
    parser.add_argument("--qat_epochs", type=int, default=10)
    parser.add_argument("--width", type=int, default=16, help="small_cnn width")
    parser.add_argument("--learning_rate", type=float, default=3e-3)
    parser.add_argument("--qat_learning_rate", type=float, default=1e-3)
    parser.add_argument("--probe_samples", type=int, default=512)
    parser.add_argument("--depth", type=int, default=15, help="bisection depth")
    parser.add_argument("--num_samples", type=int, default=10, help="PAC-Bayes draws")
    parser.add_argument("--ascent_steps", type=int, default=20, help="sharpness ascent steps")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    args = parser.parse_args()
    data = load_digits()
    start = time.time()
    per_seed = [run_seed(seed, args, data) for seed in range(args.seeds)]
    table = markdown_table(per_seed)
    minutes = (time.time() - start) / 60
    print(table)
    print(f"{args.seeds} seeds in {minutes:.1f} min")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        keys = [key for key, _, _ in COLUMNS] + ["hessian_trace_std_error"]
        raw = ["| seed | recipe | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
        for seed, rows in enumerate(per_seed):
            for recipe in RECIPES:
                raw.append(
                    f"| {seed} | {recipe} | "
                    + " | ".join(f"{rows[recipe][k]:.4g}" for k in keys)
                    + " |"
                )
        command = " ".join(f"--{k} {v}" for k, v in vars(args).items() if k != "out")
        with open(args.out, "w") as f:
            f.write(
                f"<!-- generated by: python examples/probe_table.py {command} "
                f"({minutes:.1f} min) -->\n\n{table}\n\nPer seed:\n\n" + "\n".join(raw) + "\n"
            )


if __name__ == "__main__":
    main()
