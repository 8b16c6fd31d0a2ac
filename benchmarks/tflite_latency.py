"""TFLite latency and size: kqrobust's full-int8 export vs float and TFLite's own int8.

For a ResNet-20-style and a MobileNetV2-style CIFAR model (32x32x3), three
TFLite files are built in one run:

- float: `TFLiteConverter` on the float model, no optimization;
- tflite_int8: TFLite's own full-int8 post-training quantization of the same
  float model (representative data, `TFLITE_BUILTINS_INT8`, int8 I/O);
- kqrobust_int8: `kq.export.to_tflite` of `kq.quantize_model(model)` (W8A8 LSQ,
  steps initialised from the weights and one batch), int8 I/O.

All three run in `ai_edge_litert`'s Interpreter with the same thread count,
batch 1, timed round-robin with the order rotated every round (median of
`--repeats` rounds of `--invokes` invokes each). Ratios are the result;
absolute times depend on the load of this shared machine. Data is random
(latency does not depend on it).

    .venv/bin/python benchmarks/tflite_latency.py [--threads 1] [--repeats 15]
"""

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import kqrobust as kq  # noqa: E402
from kqrobust.export.runtime import interpreter_ops  # noqa: E402
from kqrobust.export.runtime import litert_interpreter  # noqa: E402

from common import machine_description  # noqa: E402

MODELS = {"resnet20": kq.models.resnet20, "mobilenet_v2": kq.models.mobilenet_v2}


def _saved_model(model, directory):
    model.export(
        directory,
        format="tf_saved_model",
        verbose=False,
        input_signature=[tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32)],
    )
    return tf.lite.TFLiteConverter.from_saved_model(directory)


def float_tflite(model):
    with tempfile.TemporaryDirectory() as directory:
        return _saved_model(model, directory).convert()


def tflite_ptq_int8(model, data):
    with tempfile.TemporaryDirectory() as directory:
        converter = _saved_model(model, directory)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        return converter.convert()


def kqrobust_int8(model, data):
    qmodel = kq.quantize_model(
        model, recipe="lsq", weight_bits=8, activation_bits=8, calibration_data=data[:32]
    )
    return kq.export.to_tflite(qmodel, data, io_dtype="int8")


class Timed:
    def __init__(self, flatbuffer, threads):
        self.interpreter = litert_interpreter(flatbuffer, num_threads=threads)
        detail = self.interpreter.get_input_details()[0]
        self.index = detail["index"]
        rng = np.random.default_rng(0)
        if np.issubdtype(detail["dtype"], np.integer):
            self.x = rng.integers(-128, 128, detail["shape"]).astype(detail["dtype"])
        else:
            self.x = rng.random(detail["shape"]).astype(detail["dtype"])

    def run(self, invokes):
        start = time.perf_counter()
        for _ in range(invokes):
            self.interpreter.set_tensor(self.index, self.x)
            self.interpreter.invoke()
        return (time.perf_counter() - start) / invokes


def median_invoke_times(flatbuffers, threads, repeats, invokes, warmup):
    """`{name: median seconds per invoke}` of `{name: flatbuffer}`, timed round-robin in
    one run; the order rotates every round, since position in a round biases timings here."""
    timers = {k: Timed(v, threads) for k, v in flatbuffers.items()}
    for timer in timers.values():
        timer.run(warmup)
    times = {k: [] for k in timers}
    order = list(timers)
    for round_index in range(repeats):
        shift = round_index % len(order)
        for k in order[shift:] + order[:shift]:
            times[k].append(timers[k].run(invokes))
    return {k: statistics.median(v) for k, v in times.items()}


def op_counts(flatbuffer):
    interpreter = litert_interpreter(flatbuffer)
    return collections.Counter(op["op_name"] for op in interpreter_ops(interpreter))


def op_signature(flatbuffer):
    """The ops in order with their output shapes and dtypes: the graph's structure."""
    interpreter = litert_interpreter(flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [
        (
            op["op_name"],
            tuple(
                (tuple(tensors[i]["shape"]), tensors[i]["dtype"].__name__) for i in op["outputs"]
            ),
        )
        for op in interpreter_ops(interpreter)
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--invokes", type=int, default=20)
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    args = parser.parse_args()
    data = np.random.default_rng(0).random((64, 32, 32, 3)).astype(np.float32)
    print(
        f"Machine: {machine_description()}; threads={args.threads}, batch 1, "
        f"median of {args.repeats} rounds x {args.invokes} invokes\n"
    )
    print(
        "| model | variant | ms / invoke | vs float | vs tflite_int8 | size KB | vs float size "
        "| QUANTIZE/DEQUANTIZE ops | same ops as tflite_int8 |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = MODELS[name]()
        files = {
            "float": float_tflite(model),
            "tflite_int8": tflite_ptq_int8(model, data),
            "kqrobust_int8": kqrobust_int8(model, data),
        }
        median = median_invoke_times(files, args.threads, args.repeats, args.invokes, warmup=5)
        reference = op_signature(files["tflite_int8"])
        for k, flatbuffer in files.items():
            ops = op_counts(flatbuffer)
            same = "yes" if op_signature(flatbuffer) == reference else "no"
            print(
                f"| {name} | {k} | {1000 * median[k]:.3f} | {median[k] / median['float']:.2f} "
                f"| {median[k] / median['tflite_int8']:.2f} | {len(flatbuffer) / 1024:.0f} "
                f"| {len(flatbuffer) / len(files['float']):.2f} "
                f"| {ops['QUANTIZE']}/{ops['DEQUANTIZE']} | {same} |"
            )


if __name__ == "__main__":
    main()
