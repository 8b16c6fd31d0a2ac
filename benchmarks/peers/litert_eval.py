"""Runs an exported `.tflite` file in LiteRT: size, accuracy, latency.

Keras-free on purpose: both sides of the peer benchmark (Keras 3 and the
tf_keras/tfmot process) measure their exported files with this same code.
"""

import os
import statistics
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter


def _interpreter(path, batch_size=1, num_threads=1):
    interp = Interpreter(model_path=str(path), num_threads=num_threads)
    detail = interp.get_input_details()[0]
    if batch_size != detail["shape"][0]:
        interp.resize_tensor_input(detail["index"], [batch_size] + list(detail["shape"][1:]))
    interp.allocate_tensors()
    return interp


def _to_input(detail, x):
    """Quantizes float `x` to the input's integer type (if it has one)."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        info = np.iinfo(detail["dtype"])
        x = np.clip(np.round(x / scale + zero_point), info.min, info.max)
    return x.astype(detail["dtype"])


def _from_output(detail, y):
    """Dequantizes an integer output back to float."""
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        return (y.astype("float32") - zero_point) * scale
    return y.astype("float32")


def io_types(path):
    """`"int8"`-style names of the input and output tensor types."""
    interp = _interpreter(path)
    return (
        np.dtype(interp.get_input_details()[0]["dtype"]).name,
        np.dtype(interp.get_output_details()[0]["dtype"]).name,
    )


def predict(path, x, batch_size=1):
    """Float logits of `x` (N, ...) computed by LiteRT, `batch_size` at a time."""
    interp = _interpreter(path, batch_size)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    outputs = []
    for start in range(0, len(x) - len(x) % batch_size, batch_size):
        interp.set_tensor(inp["index"], _to_input(inp, x[start : start + batch_size]))
        interp.invoke()
        outputs.append(_from_output(out, interp.get_tensor(out["index"])))
    return np.concatenate(outputs)


def accuracy(path, x, y):
    """Top-1 accuracy of the `.tflite` model at `path` on `(x, y)`."""
    logits = predict(path, x)
    return float(np.mean(np.argmax(logits, axis=-1) == y))


def latency_ms(path, sample, runs=100, warmup=10, num_threads=1):
    """Median milliseconds of one batch-1 `invoke()` on `sample` (1, ...)."""
    interp = _interpreter(path, 1, num_threads)
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], _to_input(inp, sample))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def measure(path, sample, x=None, y=None, runs=100):
    """The row of one exported file: size, I/O types, latency, accuracy.

    Args:
        path: a `.tflite` file.
        sample: one input `(1, ...)` for the latency.
        x, y: test data for the accuracy (None: not measured).
        runs: timed invokes (their median is reported).

    Returns:
        A dict with `size_kb`, `io`, `latency_ms` and `accuracy` (or None).
    """
    return {
        "size_kb": os.path.getsize(path) / 1024,
        "io": "/".join(io_types(path)),
        "latency_ms": latency_ms(path, sample, runs=runs),
        "accuracy": None if x is None else accuracy(path, x, y),
    }
