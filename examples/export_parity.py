"""Export parity on digits: QAT models exported to int8 TFLite and ONNX, run, compared with Keras.

    python examples/export_parity.py [--float_epochs 12] [--qat_epochs 3]

Trains `kq.testing.small_cnn(width=16)` (Keras' defaults) in float with
Adam 3e-3, its BatchNorm statistics re-estimated at the end
(`kq.callbacks.BatchNormRecalibration`; Nagel et al., ICML 2022, sec. 4.1),
then QAT from it with `kq.quantize_model` at W8A8, W4A8 and W4A4 (Adam
5e-4, batch 64; `fit` re-estimates the statistics itself). Each model is
exported with `kq.export.to_tflite` (int8 I/O, 200 training samples as
representative data) and `kq.export.to_onnx`, and `kq.export.verify` runs
it on all 1,797 digits (1 sample = 0.06 points). TFLite has no sub-8-bit
activations, so the W4A4 file is also compared with its 8-bit-activation
reference, `kq.export.export_model(qmodel)`. Prints the Markdown table of
docs/export.md, "Measured parity".
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import kqrobust as kq  # noqa: E402

CONFIGS = (("W8A8", 8, 8), ("W4A8", 4, 8), ("W4A4", 4, 4))


def compile_model(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def row(name, runtime, result):
    return (
        f"| {name} | {runtime} | {100 * result.agreement:.2f}% | "
        f"{100 * result.keras_accuracy:.2f}% | {100 * result.runtime_accuracy:.2f}% | "
        f"{result.max_abs_diff_lsb:.2f} / {result.mean_abs_diff_lsb:.2f} |"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--float_epochs", type=int, default=12)
    parser.add_argument("--qat_epochs", type=int, default=3)
    parser.add_argument("--width", type=int, default=16, help="small_cnn width")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    (x_train, y_train), (x_test, y_test) = kq.datasets.load_digits()
    x_all, y_all = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
    model = kq.testing.small_cnn(width=args.width, seed=args.seed)
    compile_model(model, 3e-3).fit(
        x_train,
        y_train,
        batch_size=64,
        epochs=args.float_epochs,
        verbose=0,
        callbacks=[kq.callbacks.BatchNormRecalibration(x_train)],
    )
    lines = [
        "| model | runtime | agreement with Keras | Keras acc. | runtime acc. "
        "| max / mean diff (LSB) |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as out:
        for name, weight_bits, activation_bits in CONFIGS:
            keras.utils.set_random_seed(args.seed)
            qmodel = kq.quantize_model(
                model, weight_bits=weight_bits, activation_bits=activation_bits
            )
            compile_model(qmodel, 5e-4).fit(
                x_train, y_train, batch_size=64, epochs=args.qat_epochs, verbose=0
            )
            tflite_path = os.path.join(out, f"{name}.tflite")
            onnx_path = os.path.join(out, f"{name}.onnx")
            kq.export.to_tflite(qmodel, x_train[:200], tflite_path)
            kq.export.to_onnx(qmodel, onnx_path)
            verify = dict(labels=y_all, print_report=False)
            first = len(lines)
            lines.append(
                row(name, "LiteRT int8", kq.export.verify(tflite_path, qmodel, x_all, **verify))
            )
            if activation_bits < 8:
                reference = kq.export.export_model(qmodel)
                lines.append(
                    row(
                        name,
                        "LiteRT int8, vs the 8-bit-activation reference",
                        kq.export.verify(tflite_path, reference, x_all, **verify),
                    )
                )
            lines.append(
                row(name, "onnxruntime", kq.export.verify(onnx_path, qmodel, x_all, **verify))
            )
            print(*lines[first:], sep="\n", flush=True)
    print("\n".join(lines))
    print(f"{(time.time() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
