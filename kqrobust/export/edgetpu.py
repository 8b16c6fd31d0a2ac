"""`check_edgetpu`: a static Edge TPU compatibility report of a `.tflite` file.

The Edge TPU compiler cannot be installed here, so this reads the model the
way the compiler's documented rules do: every tensor 8-bit, static shapes,
each op against the supported-op list and its known limitations, and the
first op the compiler could not map (it and every op after it run on the
CPU).

References:
    Coral, "TensorFlow models on the Edge TPU",
    https://coral.ai/docs/edgetpu/models-intro/ (sections "Model
    requirements" and "Supported operations").
    Coral, "Edge TPU Compiler", https://coral.ai/docs/edgetpu/compiler/
"""

import dataclasses

import numpy as np

from kqrobust.export.runtime import interpreter_ops
from kqrobust.export.runtime import litert_interpreter

# TFLite builtin ops the Edge TPU runs (Coral's "Supported operations").
SUPPORTED_OPS = frozenset(
    {
        "ADD",
        "AVERAGE_POOL_2D",
        "CONCATENATION",
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "EXPAND_DIMS",
        "FULLY_CONNECTED",
        "HARD_SWISH",
        "L2_NORMALIZATION",
        "LOGISTIC",
        "LSTM",
        "MAXIMUM",
        "MAX_POOL_2D",
        "MEAN",
        "MINIMUM",
        "MUL",
        "PACK",
        "PAD",
        "PRELU",
        "QUANTIZE",
        "REDUCE_MAX",
        "REDUCE_MIN",
        "RELU",
        "RELU6",
        "RELU_N1_TO_1",
        "RESHAPE",
        "RESIZE_BILINEAR",
        "RESIZE_NEAREST_NEIGHBOR",
        "RSQRT",
        "SLICE",
        "SOFTMAX",
        "SPACE_TO_DEPTH",
        "SPLIT",
        "SQUARED_DIFFERENCE",
        "SQUEEZE",
        "STRIDED_SLICE",
        "SUB",
        "SUM",
        "TANH",
        "TRANSPOSE",
        "TRANSPOSE_CONV",
    }
)

_8BIT = (np.int8, np.uint8)


@dataclasses.dataclass
class OpCheck:
    """One op of the model: where the Edge TPU compiler would run it."""

    index: int
    op: str
    device: str  # "edgetpu" or "cpu"
    reason: str = ""


@dataclasses.dataclass
class EdgeTPUReport:
    """The result of `check_edgetpu`.

    Attributes:
        path: the checked file.
        tensor_issues: problems with tensors (type, dynamic shape, rank).
        ops: one `OpCheck` per op, in execution order.
        first_cpu_op: the first op the compiler would leave to the CPU
            (`OpCheck`), or None when every op maps to the Edge TPU.
    """

    path: str
    tensor_issues: list
    ops: list
    first_cpu_op: OpCheck = None

    @property
    def compatible(self):
        """True when the whole model would run on the Edge TPU."""
        return not self.tensor_issues and self.first_cpu_op is None

    def __str__(self):
        lines = [
            f"Edge TPU check of {self.path}: "
            f"{'every op maps to the Edge TPU' if self.compatible else 'NOT fully mappable'}"
        ]
        lines += [f"  tensor issue: {issue}" for issue in self.tensor_issues]
        width = max([len(o.op) for o in self.ops] + [2])
        lines.append(f"  {'#':>3}  {'op':<{width}}  device   note")
        lines += [f"  {o.index:>3}  {o.op:<{width}}  {o.device:<7}  {o.reason}" for o in self.ops]
        if self.first_cpu_op is not None:
            o = self.first_cpu_op
            lines.append(
                f"  first op on the CPU: #{o.index} {o.op} ({o.reason}); "
                "it and every later op run on the CPU"
            )
        return "\n".join(lines)


def _op_limit(op, tensors):
    """The reason `op` breaks a documented Edge TPU limitation, or ''."""
    name = op["op_name"]
    outputs = [tensors[i] for i in op["outputs"]]
    if name == "FULLY_CONNECTED":
        shape = outputs[0]["shape"]
        if int(np.prod(shape[:-1])) != 1:
            dims = [int(d) for d in shape]
            return f"FullyConnected output must be one-dimensional, got shape {dims}"
    return ""  # MEAN and PAD need their operand values: `_axis_limit`.


def _axis_limit(op, tensors, interpreter):
    name = op["op_name"]
    if name not in ("MEAN", "PAD"):
        return ""
    data, params = (tensors[i] for i in op["inputs"][:2])
    if len(data["shape"]) != 4:
        return ""
    try:
        values = np.asarray(interpreter.get_tensor(params["index"]))
    except ValueError:
        return ""
    if name == "MEAN":
        axes = {int(a) % 4 for a in values.reshape(-1)}
        if not axes <= {1, 2}:
            return f"Mean reduces only along x/y, got axes {sorted(axes)}"
    else:
        pads = values.reshape(4, 2)
        if pads[0].any() or pads[3].any():
            return "Pad pads only along x/y"
    return ""


def _load(path):
    """`(interpreter, content or None)` of a `.tflite` path or bytes."""
    content = path if isinstance(path, (bytes, bytearray)) else None
    return litert_interpreter(path), content


def _constant_operands(ops, inputs):
    """Indices of the constant operands (weights, biases, shapes, axes) of `ops`."""
    produced = {i for op in ops for i in op["outputs"]}
    constant_operands = set()
    for op in ops:
        for position, index in enumerate(op["inputs"]):
            if index >= 0 and index not in produced and index not in inputs and position > 0:
                constant_operands.add(index)
    return constant_operands


def _flatbuffer_types(path, content):
    """`{tensor index: TensorType name}` of the first subgraph, read from the
    flatbuffer (LiteRT's Python API reports INT4 tensors as int8)."""
    from kqrobust.export.int4 import read_model
    from kqrobust.export.summary import _type_names

    if content is None:
        with open(path, "rb") as f:
            content = f.read()
    names = _type_names()
    return {
        i: names.get(t.type, str(t.type))
        for i, t in enumerate(read_model(content).subgraphs[0].tensors)
    }


def _format_issues(types, tensors, constant_operands):
    """The INT4 / int16 rule: such files are for LiteRT's CPU kernels and GPU
    delegates; the Edge TPU runs only 8-bit models."""
    int4 = [tensors[i]["name"] for i in sorted(constant_operands) if types.get(i) == "INT4"]
    int16 = [
        tensors[i]["name"]
        for i, t in sorted(types.items())
        if t == "INT16" and i not in constant_operands and i in tensors
    ]
    issues = []
    if int4:
        issues.append(
            f"{len(int4)} weight tensor(s) are INT4 (first: '{int4[0]}'): the Edge TPU "
            "runs only int8/uint8 models. INT4 files (weight_dtype='int4') are for "
            "LiteRT's CPU kernels and GPU delegates; export with weight_dtype='int8' "
            "for the Edge TPU"
        )
    if int16:
        issues.append(
            f"{len(int16)} activation tensor(s) are int16 (first: '{int16[0]}'): the "
            "Edge TPU runs only int8/uint8 models. 16x8 files (activation_dtype="
            "'int16') are for LiteRT's CPU kernels and GPU delegates; export with "
            "activation_dtype='int8' for the Edge TPU"
        )
    return issues


def _tensor_issues(tensors, activations, constant_operands):
    """Type, dynamic-shape and rank problems of the model's tensors."""
    issues = []
    for index in sorted(activations):
        tensor = tensors[index]
        if tensor["dtype"] not in _8BIT:
            issues.append(f"'{tensor['name']}' is {np.dtype(tensor['dtype']).name}, not int8/uint8")
        if (np.asarray(tensor["shape_signature"]) < 0).any():
            issues.append(
                f"'{tensor['name']}' has a dynamic shape "
                f"{[int(d) for d in tensor['shape_signature']]}"
            )
        shape = [int(d) for d in tensor["shape"]]
        if len(shape) > 3 and any(d != 1 for d in shape[:-3]):
            issues.append(
                f"'{tensor['name']}' has shape {shape}: only the 3 innermost "
                "dimensions may be larger than 1"
            )
    for index in sorted(constant_operands):
        tensor = tensors[index]
        if tensor["dtype"] not in _8BIT + (np.int32,):
            issues.append(f"constant '{tensor['name']}' is {np.dtype(tensor['dtype']).name}")
    return issues


def _map_ops(ops, tensors, interpreter, constant_operands, types):
    """One `OpCheck` per op in order, and the first op left to the CPU (or None)."""
    checks, first_cpu_op = [], None
    for position, op in enumerate(ops):
        name = op["op_name"]
        if first_cpu_op is not None:
            checks.append(OpCheck(position, name, "cpu", "after the first CPU op"))
            continue
        reason = ""
        if name not in SUPPORTED_OPS:
            reason = "not supported by the Edge TPU"
        else:
            reason = _op_limit(op, tensors) or _axis_limit(op, tensors, interpreter)
        float_io = [
            tensors[i]["name"]
            for i in list(op["inputs"]) + list(op["outputs"])
            if i >= 0 and i not in constant_operands and tensors[i]["dtype"] not in _8BIT
        ]
        int4 = [tensors[i]["name"] for i in op["inputs"] if i >= 0 and types.get(i) == "INT4"]
        if not reason and float_io:
            reason = f"non-8-bit tensor '{float_io[0]}'"
        if not reason and int4:
            reason = f"INT4 weights '{int4[0]}'"
        check = OpCheck(position, name, "cpu" if reason else "edgetpu", reason)
        if reason:
            first_cpu_op = check
        checks.append(check)
    return checks, first_cpu_op


def check_edgetpu(path):
    """Checks a `.tflite` model against the Edge TPU's documented requirements.

    Checks, in named steps: the file's tensor formats (`_format_issues`:
    INT4 weights and int16 activations do not run on the Edge TPU, they are
    for LiteRT's CPU kernels and GPU delegates); every activation tensor is
    int8/uint8 (int32 only for biases and constant shape/axis operands),
    every shape static, tensors with more than 3 dimensions of size 1
    outside the 3 innermost (`_tensor_issues`); each op in the
    supported-op list and within its listed limits (FullyConnected output
    one-dimensional, Mean along x/y, Pad along x/y) (`_map_ops`). The
    compiler maps ops in order and stops at the first one it cannot map:
    that op and all later ones run on the CPU.

    Args:
        path: a `.tflite` file or its bytes.

    Returns:
        An `EdgeTPUReport` (`print` it for the table; `.compatible`).

    Example: `print(kq.export.check_edgetpu("model.tflite"))`, run in
    docs/export.md ("Edge TPU check").

    References:
        Coral, "TensorFlow models on the Edge TPU",
        https://coral.ai/docs/edgetpu/models-intro/ (model requirements,
        supported operations and their known limitations).
    """
    interpreter, content = _load(path)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter_ops(interpreter)
    inputs = {d["index"] for d in interpreter.get_input_details()}
    constant_operands = _constant_operands(ops, inputs)
    activations = {i for op in ops for i in op["outputs"]} | inputs
    types = _flatbuffer_types(path, content)
    tensor_issues = _format_issues(types, tensors, constant_operands)
    tensor_issues += _tensor_issues(tensors, activations, constant_operands)
    checks, first_cpu_op = _map_ops(ops, tensors, interpreter, constant_operands, types)
    label = "<bytes>" if content else str(path)
    return EdgeTPUReport(label, tensor_issues, checks, first_cpu_op)
