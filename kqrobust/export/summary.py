"""What a `.tflite` file stores, read from its flatbuffer (not from LiteRT).

LiteRT's Python interpreter reports an INT4 tensor as int8
(`get_tensor_details`), so the tensor types of an export are read from the
flatbuffer itself (`ai_edge_litert.schema_py_generated`).
"""

import dataclasses
import re

import numpy as np

from kqrobust.export.int4 import op_names
from kqrobust.export.int4 import read_model


def _type_names():
    from ai_edge_litert import schema_py_generated as schema

    return {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}


def _content(source):
    if isinstance(source, (bytes, bytearray)):
        return bytes(source)
    with open(source, "rb") as f:
        return f.read()


@dataclasses.dataclass
class WeightRow:
    """One op's constant weight tensor (input 1)."""

    index: int
    op: str
    tensor: str
    dtype: str  # the flatbuffer's TensorType name: "INT4", "INT8", "FLOAT32", ...
    shape: tuple
    nbytes: int


def weight_rows(source):
    """One `WeightRow` per op whose input 1 is a constant tensor.

    Args:
        source: a `.tflite` path or its bytes.
    """
    model = read_model(_content(source))
    names, types = op_names(model), _type_names()
    rows = []
    for subgraph in model.subgraphs:
        for index, op in enumerate(subgraph.operators):
            if len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            tensor = subgraph.tensors[op.inputs[1]]
            data = model.buffers[tensor.buffer].data if tensor.buffer > 0 else None
            if data is None or len(data) == 0:
                continue
            rows.append(
                WeightRow(
                    index,
                    names[op.opcodeIndex],
                    tensor.name.decode(),
                    types.get(tensor.type, str(tensor.type)),
                    tuple(int(d) for d in tensor.shape),
                    len(data),
                )
            )
    return rows


def tensor_types(source, constant=None):
    """`{tensor name: TensorType name}` of every tensor of the file.

    Args:
        source: a `.tflite` path or its bytes.
        constant: True for constant tensors (with data) only, False for the
            others (activations, inputs, outputs) only, None for all.
    """
    model = read_model(_content(source))
    types = _type_names()
    found = {}
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            data = model.buffers[tensor.buffer].data if tensor.buffer > 0 else None
            is_constant = data is not None and len(data) > 0
            if constant is None or constant == is_constant:
                found[tensor.name.decode()] = types.get(tensor.type, str(tensor.type))
    return found


def layer_of(tensor_name, layer_names):
    """The longest layer name that is a path element of `tensor_name`, or ''."""
    for name in sorted(layer_names, key=len, reverse=True):
        if re.search(rf"(^|[/;]){re.escape(name)}(_\d+)?(/|;|$)", tensor_name):
            return name
    return ""


def weight_summary(source, layer_names=()):
    """A table of the weight tensors of a `.tflite`: op, layer, type, bytes.

    Args:
        source: a `.tflite` path or its bytes.
        layer_names: the model's layer names, to name each weight's layer.

    Returns:
        The table as a string (the export summary `kqrobust export` prints).

    Example: `print(weight_summary("w4a8.tflite", [l.name for l in
    qmodel.layers]))`, run in docs/export.md ("INT4 weights and 16x8").
    """
    rows = weight_rows(source)
    lines = [f"  {'#':>3}  {'op':<18} {'layer':<24} {'weights':<8} {'shape':<18} bytes"]
    for row in rows:
        layer = layer_of(row.tensor, layer_names) or row.tensor[-24:]
        lines.append(
            f"  {row.index:>3}  {row.op:<18} {layer:<24} {row.dtype:<8} "
            f"{str(list(row.shape)):<18} {row.nbytes}"
        )
    int4 = sorted({layer_of(r.tensor, layer_names) or r.tensor for r in rows if r.dtype == "INT4"})
    total = int(np.sum([r.nbytes for r in rows])) if rows else 0
    lines.append(f"  INT4 layers: {', '.join(int4) if int4 else 'none'}; weight bytes: {total}")
    return "\n".join(lines)
