"""Size, LiteRT latency and accuracy of the int8, INT4-weight and 16x8 TFLite exports.

For ResNet-20 and MobileNetV2 (`kq.models`, CIFAR form, 32x32x3), on the
bundled digits (8x8 upsampled 4x, grey copied to 3 channels: 1,437 training
and 360 test images), in one run:

1. the float model is trained (`--float_epochs`), then QAT-trained twice
   from it (`--qat_epochs`): W8A8 and W4A8 (LSQ; first and last layers at 8
   bits, the recipe default);
2. five TFLite files are written: float; int8 (W8A8); W4A8 in int8
   (`weight_dtype="int8"`, the 4-bit codes inside int8); W4A8 with INT4
   kernels (`weight_dtype="int4"`); 16x8 (the W8A8 model with
   `activation_dtype="int16"`);
3. each runs in LiteRT (`ai_edge_litert`, default XNNPACK delegate, one
   thread, batch 1): the digits test accuracy, the argmax agreement with its
   Keras model, and the latency, timed round-robin with the order rotated
   every round (median of `--repeats` rounds of `--invokes` invokes). Ratios
   are the result; absolute times depend on the load of this shared machine.

    .venv/bin/python benchmarks/lowbit_export.py [--models resnet20,mobilenet_v2]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tflite_latency import float_tflite  # noqa: E402
from tflite_latency import median_invoke_times  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust.datasets import load_digits  # noqa: E402

from common import machine_description  # noqa: E402

MODELS = {"resnet20": kq.models.resnet20, "mobilenet_v2": kq.models.mobilenet_v2}


def digits_32():
    """The digits as 32x32x3 images (nearest 4x upsampling, 3 equal channels)."""
    (x_train, y_train), (x_test, y_test) = load_digits()

    def grow(x):
        return np.repeat(np.repeat(np.repeat(x, 4, axis=1), 4, axis=2), 3, axis=3)

    return (grow(x_train), y_train), (grow(x_test), y_test)


def _compile(model, lr):
    model.compile(
        keras.optimizers.Adam(lr),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train(name, args, train_data):
    x, y = train_data
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    _compile(model, 2e-3)
    model.fit(
        x,
        y,
        batch_size=64,
        epochs=args.float_epochs,
        verbose=0,
        callbacks=[kq.callbacks.BatchNormRecalibration(x)],
    )
    print(f"{name}: float trained", flush=True)
    qat = {}
    for label, bits in (("w8a8", 8), ("w4a8", 4)):
        keras.utils.set_random_seed(0)
        qmodel = kq.quantize_model(
            model, weight_bits=bits, activation_bits=8, calibration_data=x[:256]
        )
        _compile(qmodel, 5e-4)
        qmodel.fit(x, y, batch_size=64, epochs=args.qat_epochs, verbose=0)
        qat[label] = qmodel
        print(f"{name}: {label} QAT trained", flush=True)
    return model, qat


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--float_epochs", type=int, default=4)
    parser.add_argument("--qat_epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--invokes", type=int, default=10)
    args = parser.parse_args()
    train_data, (x_test, y_test) = digits_32()
    representative = train_data[0][:200]
    print(
        f"Machine: {machine_description()}; LiteRT threads={args.threads}, batch 1, median "
        f"of {args.repeats} rounds x {args.invokes} invokes; digits at 32x32x3, "
        f"{args.float_epochs} float + {args.qat_epochs} QAT epochs\n"
    )
    rows = []
    for name in args.models.split(","):
        model, qat = train(name, args, train_data)
        files = {
            "float": (float_tflite(model), model),
            "int8 (W8A8)": (kq.export.to_tflite(qat["w8a8"], representative), qat["w8a8"]),
            "W4A8 in int8": (kq.export.to_tflite(qat["w4a8"], representative), qat["w4a8"]),
            "int4-weight (W4A8)": (
                kq.export.to_tflite(qat["w4a8"], representative, weight_dtype="int4"),
                qat["w4a8"],
            ),
            "16x8 (W8A16)": (
                kq.export.to_tflite(qat["w8a8"], representative, activation_dtype="int16"),
                qat["w8a8"],
            ),
        }
        print(f"{name}: files written", flush=True)
        median = median_invoke_times(
            {k: v[0] for k, v in files.items()}, args.threads, args.repeats, args.invokes, warmup=3
        )
        float_size = len(files["float"][0])
        for k, (flatbuffer, keras_model) in files.items():
            result = kq.export.verify(
                flatbuffer, keras_model, x_test, labels=y_test, print_report=False
            )
            rows.append(
                (
                    name,
                    k,
                    len(flatbuffer),
                    len(flatbuffer) / float_size,
                    len(flatbuffer) / len(files["W4A8 in int8"][0]),
                    1000 * median[k],
                    median[k] / median["float"],
                    result.keras_accuracy,
                    result.runtime_accuracy,
                    result.agreement,
                )
            )
        _table([row for row in rows if row[0] == name])  # each model as soon as it is measured
    print("\nAll models:")
    _table(rows)


def _table(rows):
    print(
        "| model | file | size KB | vs float | vs W4A8 in int8 | ms / invoke | vs float "
        "| Keras acc | LiteRT acc | agreement |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row[0]} | {row[1]} | {row[2] / 1024:.0f} | {row[3]:.3f} | {row[4]:.3f} "
            f"| {row[5]:.3f} | {row[6]:.2f} | {row[7]:.4f} | {row[8]:.4f} | {row[9]:.4f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
