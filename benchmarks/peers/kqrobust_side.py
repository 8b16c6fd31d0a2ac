"""The Keras 3 side of the peer benchmark: kqrobust, Keras' own quantize, TFLite PTQ.

Runs in its own process (Keras 3; tfmot is never imported here). Called by
`benchmarks/peers.py`; writes one JSON file per command.

    python benchmarks/peers/kqrobust_side.py prepare --work_dir D --out D/float.json
    python benchmarks/peers/kqrobust_side.py digits --work_dir D --out D/kq_digits.json
    python benchmarks/peers/kqrobust_side.py time --arch resnet20 --out D/t.json
    python benchmarks/peers/kqrobust_side.py export --arch resnet20 --work_dir D --out D/e.json
"""

import argparse
import importlib
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kqrobust as kq  # noqa: E402

import converter as converter_lib  # noqa: E402
import litert_eval  # noqa: E402
import shared  # noqa: E402

# isort: split
import common  # noqa: E402  (benchmarks/common.py, put on sys.path by shared)

INPUT_SHAPES = {"small_cnn": (8, 8, 1), "resnet20": (32, 32, 3)}
BUILDERS = {"small_cnn": kq.testing.small_cnn, "resnet20": kq.models.resnet20}
PTQ_METHODS = ("minmax", "aciq_laplace")
# "w<weight bits>a<activation bits>" columns of the accuracy table; TFLite runs
# 8-bit activations only (DESIGN.md), so only the a8 models are exported.
PTQ_BITS = ("w8a8", "w4a8", "w4a4")
FLOAT_MODEL_FILE = "float_digits.keras"


def versions():
    """The versions of the stack this side ran on."""
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "kqrobust": kq.__version__}


def kq_export_module():
    """`kqrobust.export`, or None where this checkout lacks it."""
    try:
        return importlib.import_module("kqrobust.export")
    except ImportError:
        return None


def missing_api():
    """The contract names (DESIGN.md) this kqrobust does not provide yet."""
    return [
        name
        for name, present in (
            ("kq.robustify", hasattr(kq, "robustify")),
            ("kq.export.to_tflite", hasattr(kq_export_module(), "to_tflite")),
        )
        if not present
    ]


def compile_model(model, optimizer, metrics=()):
    """Compiles `model` for 10-class logits; returns it."""
    model.compile(
        optimizer=optimizer,
        metrics=list(metrics),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def accuracy(model, x, y):
    """Top-1 accuracy of `model` on `(x, y)` in Keras."""
    compile_model(model, "adam", ["accuracy"])
    return float(model.evaluate(x, y, verbose=0, return_dict=True)["accuracy"])


def error_summary(err):
    """The first `error:` line of a converter error (they run to pages)."""
    text = str(err)
    lines = [line for line in text.splitlines() if "error:" in line] or [text]
    summary = lines[0].split("error:", 1)[-1].strip()
    summary = re.sub(r"^loc\(.*\)\):\s*", "", summary)  # drop the MLIR location
    return f"{type(err).__name__}: {summary[:200]}"


def tflite_row(work_dir, name, export_fn, sample, x=None, y=None, runs=100):
    """Exports with `export_fn(path)` and measures the file; errors are recorded."""
    path = os.path.join(work_dir, f"{name}.tflite")
    try:
        export_fn(path)
    except Exception as err:  # noqa: BLE001 - a failed export is a result here.
        return {"error": error_summary(err)}
    return litert_eval.measure(path, sample, x, y, runs=runs)


def converter_ptq(model, representative_x):
    """Export function: the TFLite converter's own full-int8 PTQ of a float model."""

    def export(path):
        flatbuffer = converter_lib.full_int8(
            tf.lite.TFLiteConverter.from_keras_model(model), representative_x
        )
        with open(path, "wb") as f:
            f.write(flatbuffer)

    return export


def float_tflite(model):
    """Export function: a plain float32 TFLite file (the size/latency reference)."""

    def export(path):
        with open(path, "wb") as f:
            f.write(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    return export


def kq_export(model, representative_x):
    """Export function: `kq.export.to_tflite` full int8 (needs kq.export)."""

    def export(path):
        if "kq.export.to_tflite" in missing_api():
            raise RuntimeError("error: kq.export.to_tflite is not in this kqrobust")
        kq_export_module().to_tflite(model, representative_x[:100], path, io_dtype="int8")

    return export


def run_prepare(args):
    """Trains the float digits model both sides start from; saves data and weights."""
    (x_train, y_train), (x_test, y_test) = kq.datasets.load_digits()
    np.savez(
        os.path.join(args.work_dir, shared.DATA_FILE),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
    )
    model = compile_model(
        kq.testing.small_cnn(seed=args.seed), keras.optimizers.Adam(args.float_lr), ["accuracy"]
    )
    model.fit(x_train, y_train, epochs=args.float_epochs, batch_size=args.batch_size, verbose=0)
    model.save(os.path.join(args.work_dir, FLOAT_MODEL_FILE))
    shared.save_weights_by_name(model, os.path.join(args.work_dir, shared.FLOAT_WEIGHTS_FILE))
    shared.write_json(
        args.out,
        {
            "side": "kqrobust",
            "versions": versions(),
            "float_epochs": args.float_epochs,
            "float_accuracy": accuracy(model, x_test, y_test),
        },
    )


def run_digits(args):
    """Every Keras 3 candidate on digits: QAT, PTQ, Keras quantize, robustify; their files."""
    data = np.load(os.path.join(args.work_dir, shared.DATA_FILE))
    x_train, y_train = data["x_train"], data["y_train"]
    x_test, y_test = data["x_test"], data["y_test"]
    calib = x_train[: args.calibration_size]
    sample = x_test[:1]

    def load_float():
        return keras.models.load_model(os.path.join(args.work_dir, FLOAT_MODEL_FILE))

    def measure(name, export_fn):
        return tflite_row(args.work_dir, name, export_fn, sample, x_test, y_test, args.latency_runs)

    def fit(model):
        compile_model(model, keras.optimizers.Adam(args.lr), ["accuracy"])
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
        return time.perf_counter() - start

    keras.utils.set_random_seed(args.seed)
    float_model = load_float()
    rows = {
        "float": {
            "keras_accuracy": accuracy(float_model, x_test, y_test),
            "tflite": measure("float_fp32", float_tflite(float_model)),
        }
    }

    qat = kq.quantize_model(float_model, recipe="lsq", weight_bits=8, activation_bits=8)
    seconds = fit(qat)
    rows["kq_lsq_w8a8"] = {
        "keras_accuracy": accuracy(qat, x_test, y_test),
        "fit_seconds": seconds,
        "tflite": measure("kq_lsq_w8a8", kq_export(qat, calib)),
    }

    rows["tflite_ptq_w8a8"] = {
        "tflite": measure("tflite_ptq_w8a8", converter_ptq(float_model, calib))
    }

    for mode, bits in (("int8", 8), ("int4", 4)):
        model = load_float()
        model.quantize(mode)
        name = f"keras_quantize_{mode}"
        rows[name] = {
            "keras_accuracy": accuracy(model, x_test, y_test),
            "weight_bits": bits,
            "quantized_layers": sorted(
                layer.name for layer in model.layers if getattr(layer, "quantization_mode", None)
            ),
            "tflite": measure(name, converter_ptq(model, calib)),
        }

    sources = {"kq_ptq": float_model}
    if hasattr(kq, "robustify"):
        robust = kq.robustify(load_float(), recipe="robust")
        rows["kq_robustify"] = {
            "fit_seconds": fit(robust),
            "keras_accuracy": accuracy(robust, x_test, y_test),
        }
        sources["kq_robust_ptq"] = robust
    for prefix, source in sources.items():
        for method in args.ptq_methods:
            for bits in args.ptq_bits:
                w_bits, a_bits = map(int, shared.BITS_PATTERN.match(bits).groups())
                name = f"{prefix}_{method}_{bits}"
                pmodel = kq.ptq.quantize(
                    source, calib, method=method, weight_bits=w_bits, activation_bits=a_bits
                )
                rows[name] = {"keras_accuracy": accuracy(pmodel, x_test, y_test)}
                if a_bits == 8:
                    rows[name]["tflite"] = measure(name, kq_export(pmodel, calib))
    shared.write_json(
        args.out,
        {"side": "kqrobust", "versions": versions(), "missing_api": missing_api(), "rows": rows},
    )


def run_time(args):
    """Median train-step ms of the Keras 3 float model and its LSQ W8A8 clone."""
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(args.seed)
    x, y = common.random_batch(INPUT_SHAPES[args.arch], args.batch_size)
    model = BUILDERS[args.arch]()
    model(x[:2])
    qat = kq.quantize_model(model, recipe="lsq", weight_bits=8, activation_bits=8)
    steps = {
        "float": common.compiled_train_step(model, jit_compile=args.jit_compile),
        "qat": common.compiled_train_step(qat, jit_compile=args.jit_compile),
    }
    seconds = common.interleaved_median_times(steps, x, y, repeats=args.repeats)
    shared.write_json(
        args.out,
        {
            "side": "kqrobust",
            "versions": versions(),
            "arch": args.arch,
            "batch_size": args.batch_size,
            "params": int(model.count_params()),
            "ms_per_step": {name: 1000 * s for name, s in seconds.items()},
        },
    )


def run_export(args):
    """Size and latency of the exported files of an untrained `args.arch`."""
    keras.utils.set_random_seed(args.seed)
    x, _ = common.random_batch(INPUT_SHAPES[args.arch], 32)
    model = BUILDERS[args.arch]()
    model(x)
    qat = kq.quantize_model(
        model, recipe="lsq", weight_bits=8, activation_bits=8, calibration_data=x
    )
    ptq = kq.ptq.quantize(model, x, method="minmax", weight_bits=8, activation_bits=8)
    exports = {
        "float_fp32": float_tflite(model),
        "tflite_ptq_w8a8": converter_ptq(model, x),
        "kq_lsq_w8a8": kq_export(qat, x),
        "kq_ptq_minmax_w8a8": kq_export(ptq, x),
    }
    shared.write_json(
        args.out,
        {
            "side": "kqrobust",
            "arch": args.arch,
            "missing_api": missing_api(),
            "rows": {
                name: {
                    "tflite": tflite_row(
                        args.work_dir, f"{name}_{args.arch}", fn, x[:1], runs=args.latency_runs
                    )
                }
                for name, fn in exports.items()
            },
        },
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["prepare", "digits", "time", "export"])
    parser.add_argument("--out", required=True, help="JSON file to write.")
    parser.add_argument("--work_dir", default=".")
    parser.add_argument("--arch", choices=sorted(INPUT_SHAPES), default="small_cnn")
    parser.add_argument("--float_epochs", type=int, default=30)
    parser.add_argument("--float_lr", type=float, default=1e-2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--calibration_size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--latency_runs", type=int, default=100)
    parser.add_argument(
        "--ptq_methods", nargs="+", default=list(PTQ_METHODS), choices=sorted(kq.ptq.METHODS)
    )
    parser.add_argument(
        "--ptq_bits",
        nargs="+",
        default=list(PTQ_BITS),
        help="PTQ bit-widths as w<bits>a<bits>, e.g. w4a8.",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jit_compile", action="store_true", help="time: XLA train steps")
    parser.add_argument("--mixed_precision", action="store_true", help="time: mixed_float16 models")
    args = parser.parse_args(argv)
    {"prepare": run_prepare, "digits": run_digits, "time": run_time, "export": run_export}[
        args.command
    ](args)


if __name__ == "__main__":
    sys.exit(main())
