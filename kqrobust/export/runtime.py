"""Runs an exported model in its real runtime: LiteRT or onnxruntime.

Both runners take float inputs and return float outputs: integer inputs are
quantized with the model's input scale and zero point, integer outputs
dequantized, exactly as an application would.
"""

import numpy as np

# LiteRT's CPU kernel sets for one `.tflite` file (`ai_edge_litert.interpreter.OpResolverType`).
KERNELS = {
    "xnnpack": "AUTO",  # LiteRT's default: the XNNPACK delegate where it takes the op.
    "builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES",  # TFLite's optimized kernels.
    "reference": "BUILTIN_REF",  # TFLite's reference kernels.
}


def litert_interpreter(model, num_threads=1, kernels="xnnpack", preserve_all_tensors=False):
    """A LiteRT `ai_edge_litert.interpreter.Interpreter` for `model`, tensors allocated.

    Args:
        model: a `.tflite` path, or the model's bytes.
        num_threads: interpreter threads.
        kernels: which of LiteRT's CPU kernel sets runs the ops (`KERNELS`):
            "xnnpack" (LiteRT's default), "builtin" or "reference". They
            round some int8 results differently (docs/export.md).
        preserve_all_tensors: keep every intermediate tensor readable after
            `invoke` (LiteRT's `experimental_preserve_all_tensors`).
    """
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.interpreter import OpResolverType

    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {sorted(KERNELS)}. Received: kernels={kernels!r}")
    content = model if isinstance(model, (bytes, bytearray)) else None
    interpreter = Interpreter(
        model_path=None if content else str(model),
        model_content=content,
        num_threads=num_threads,
        experimental_op_resolver_type=OpResolverType[KERNELS[kernels]],
        experimental_preserve_all_tensors=preserve_all_tensors,
    )
    interpreter.allocate_tensors()
    return interpreter


def interpreter_ops(interpreter):
    """The graph's ops as dicts (`op_name`, `inputs`, `outputs`), delegate nodes left out.

    LiteRT's public API lists tensors but not ops; this is the one place that
    reads its private op list (`Interpreter._get_ops_details`).
    """
    return [op for op in interpreter._get_ops_details() if op["op_name"] != "DELEGATE"]


class TFLiteRunner:
    """Runs a `.tflite` file with `ai_edge_litert.interpreter.Interpreter`.

    Args:
        path: the `.tflite` file, or its bytes.
        num_threads: interpreter threads.
        kernels: LiteRT's CPU kernel set (`litert_interpreter`): "xnnpack"
            (the default, as deployed), "builtin" or "reference".

    Example: `TFLiteRunner("model.tflite").predict(x)`, run in
    docs/extending.md.
    """

    runtime = "litert"

    def __init__(self, path, num_threads=1, kernels="xnnpack"):
        self.interpreter = litert_interpreter(path, num_threads, kernels)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    @property
    def output_scale(self):
        """The output quantization scale, or None for a float output."""
        scale, _ = self.output["quantization"]
        return scale or None

    def quantize_input(self, x):
        dtype = self.input["dtype"]
        if not np.issubdtype(dtype, np.integer):
            return x.astype(dtype)
        scale, zero_point = self.input["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)

    def dequantize_output(self, y):
        if not np.issubdtype(y.dtype, np.integer):
            return y.astype(np.float32)
        scale, zero_point = self.output["quantization"]
        return ((y.astype(np.float32) - zero_point) * scale).astype(np.float32)

    def predict(self, x):
        """Float outputs for a batch of float inputs (one invoke per batch row
        when the model's batch size is fixed)."""
        x = np.asarray(x, np.float32)
        batch = int(self.input["shape"][0])
        outputs = []
        for start in range(0, len(x), batch):
            chunk = x[start : start + batch]
            if len(chunk) != batch:
                self.interpreter.resize_tensor_input(self.input["index"], chunk.shape)
                self.interpreter.allocate_tensors()
            self.interpreter.set_tensor(self.input["index"], self.quantize_input(chunk))
            self.interpreter.invoke()
            outputs.append(
                self.dequantize_output(self.interpreter.get_tensor(self.output["index"]))
            )
        return np.concatenate(outputs)


class ONNXRunner:
    """Runs a `.onnx` file with onnxruntime on the CPU.

    onnxruntime's graph optimizations (on by default, as in deployment) fuse
    QuantizeLinear/DequantizeLinear pairs into integer kernels, which round
    intermediate results; with `optimize=False` the QDQ graph runs as written
    and reproduces the Keras model's float arithmetic.

    Args:
        path: the `.onnx` file.
        num_threads: intra-op threads.
        optimize: run onnxruntime's graph optimizations.
    """

    runtime = "onnxruntime"
    output_scale = None

    def __init__(self, path, num_threads=1, optimize=True):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    def predict(self, x, batch_size=256):
        x = np.asarray(x, np.float32)
        outputs = [
            self.session.run(None, {self.input_name: x[i : i + batch_size]})[0]
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(outputs).astype(np.float32)


def runner_for(path, num_threads=1):
    """A `TFLiteRunner` for `.tflite` paths, an `ONNXRunner` for `.onnx`."""
    if isinstance(path, (bytes, bytearray)) or str(path).endswith(".tflite"):
        return TFLiteRunner(path, num_threads)
    if str(path).endswith(".onnx"):
        return ONNXRunner(str(path), num_threads)
    raise ValueError(f"path must name a .tflite or .onnx file. Received: path={path!r}")
