"""The tfmot side of the peer benchmark: tf_keras + tfmot default 8-bit QAT.

Runs in its own process with TF_USE_LEGACY_KERAS=1 (tfmot 0.8.1 needs tf_keras
and cannot quantize Keras 3 models), from `.venv-peer`. `benchmarks/peers.py`
calls it; it writes one JSON file per command.

    python benchmarks/peers/tfmot_side.py digits --work_dir D --out D/tfmot_digits.json
    python benchmarks/peers/tfmot_side.py time --arch resnet20 --out D/t.json
    python benchmarks/peers/tfmot_side.py export --arch resnet20 --work_dir D --out D/e.json

(The script sets TF_USE_LEGACY_KERAS=1 itself, before importing TensorFlow.)
"""

import argparse
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras  # noqa: E402

import converter as converter_lib  # noqa: E402
import litert_eval  # noqa: E402
import shared  # noqa: E402

# isort: split
import common  # noqa: E402  (benchmarks/common.py, put on sys.path by shared)
import tf_keras_models  # noqa: E402

INPUT_SHAPES = {"small_cnn": (8, 8, 1), "resnet20": (32, 32, 3)}


def versions():
    """The versions of the stack this side ran on."""
    return {
        "tensorflow": tf.__version__,
        "tf_keras": tf_keras.__version__,
        "tfmot": tfmot.__version__,
    }


def compile_model(model, optimizer, metrics=(), jit_compile=False):
    """Compiles `model` for 10-class logits; returns it."""
    model.compile(
        optimizer=optimizer,
        metrics=list(metrics),
        jit_compile=jit_compile,
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def quantize(model):
    """tfmot's default 8-bit QAT (per-channel weights, per-tensor activations)."""
    return tfmot.quantization.keras.quantize_model(model)


def export(model, representative_x, path):
    """Writes tfmot's QAT `model` as a full-int8 `.tflite` at `path`."""
    flatbuffer = converter_lib.full_int8(
        tf.lite.TFLiteConverter.from_keras_model(model), representative_x
    )
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def run_digits(args):
    """QAT from the Keras 3 side's float weights; accuracy, then the int8 file."""
    data = np.load(os.path.join(args.work_dir, shared.DATA_FILE))
    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    tf_keras.utils.set_random_seed(args.seed)
    model = tf_keras_models.small_cnn()
    shared.load_weights_by_name(model, os.path.join(args.work_dir, shared.FLOAT_WEIGHTS_FILE))
    compile_model(model, "adam", ["accuracy"])
    float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]

    qat = compile_model(quantize(model), tf_keras.optimizers.Adam(args.lr), ["accuracy"])
    start = time.perf_counter()
    qat.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    fit_seconds = time.perf_counter() - start
    path = export(qat, x_train, os.path.join(args.work_dir, "tfmot_qat_w8a8.tflite"))
    result = {
        "side": "tfmot",
        "versions": versions(),
        "float_accuracy": float_accuracy,
        "rows": {
            "tfmot_qat_w8a8": {
                "keras_accuracy": qat.evaluate(x_test, y_test, verbose=0)[1],
                "fit_seconds": fit_seconds,
                "tflite": litert_eval.measure(
                    path, x_test[:1], x_test, y_test, runs=args.latency_runs
                ),
            }
        },
    }
    shared.write_json(args.out, result)


def run_time(args):
    """Median train-step ms of the tf_keras float model and its tfmot QAT."""
    if args.mixed_precision:
        tf_keras.mixed_precision.set_global_policy("mixed_float16")
    tf_keras.utils.set_random_seed(args.seed)
    x, y = common.random_batch(INPUT_SHAPES[args.arch], args.batch_size)
    model = compile_model(
        tf_keras_models.BUILDERS[args.arch](), "sgd", jit_compile=args.jit_compile
    )
    qat = compile_model(quantize(model), "sgd", jit_compile=args.jit_compile)
    steps = {
        "float": lambda x, y: model.train_on_batch(x, y),
        "qat": lambda x, y: qat.train_on_batch(x, y),
    }
    seconds = common.interleaved_median_times(steps, x, y, repeats=args.repeats)
    shared.write_json(
        args.out,
        {
            "side": "tfmot",
            "versions": versions(),
            "arch": args.arch,
            "batch_size": args.batch_size,
            "params": int(model.count_params()),
            "ms_per_step": {name: 1000 * s for name, s in seconds.items()},
        },
    )


def run_export(args):
    """Size and latency of the int8 file of an untrained tfmot QAT model."""
    tf_keras.utils.set_random_seed(args.seed)
    x, _ = common.random_batch(INPUT_SHAPES[args.arch], 32)
    qat = quantize(tf_keras_models.BUILDERS[args.arch]())
    qat(x)
    path = export(qat, x, os.path.join(args.work_dir, f"tfmot_qat_w8a8_{args.arch}.tflite"))
    shared.write_json(
        args.out,
        {
            "side": "tfmot",
            "arch": args.arch,
            "rows": {
                "tfmot_qat_w8a8": {
                    "tflite": litert_eval.measure(path, x[:1], runs=args.latency_runs)
                }
            },
        },
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["digits", "time", "export"])
    parser.add_argument("--out", required=True, help="JSON file to write.")
    parser.add_argument("--work_dir", default=".")
    parser.add_argument("--arch", choices=sorted(INPUT_SHAPES), default="small_cnn")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--latency_runs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit_compile", action="store_true", help="time: XLA train steps")
    parser.add_argument("--mixed_precision", action="store_true", help="time: mixed_float16 models")
    args = parser.parse_args(argv)
    {"digits": run_digits, "time": run_time, "export": run_export}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
