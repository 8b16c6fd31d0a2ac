"""INT4 kernels in an ONNX QDQ model (opset 21).

tf2onnx stores each kernel of the export graph as a float initializer already
on its trained grid (`codes * s_c`). For a layer trained at 4 bits or fewer
this module replaces that initializer by an INT4 initializer holding the
codes and a per-axis `DequantizeLinear` (scale `s_c`, zero point 0) feeding
the Conv / MatMul / Gemm. ONNX has INT4 tensors and INT4 `DequantizeLinear`
from opset 21 (IR version 10); tf2onnx 1.17 writes opset 18 at most, so the
model is converted to opset 21 with `onnx.version_converter` first.
onnxruntime's CPU provider runs such models (it dequantizes the constant INT4
weights when it loads the model).

References:
    ONNX operators DequantizeLinear (opset 21: int4 inputs, per-axis scales);
    ONNX IR version 10 (INT4 tensor type).
"""

import numpy as np

from kqrobust import model_graph
from kqrobust.export import ranges
from kqrobust.export.int4 import INT4_MAX
from kqrobust.export.int4 import INT4_MIN
from kqrobust.export.int4 import weight_bits
from kqrobust.export.summary import layer_of
from kqrobust.ops.lsq import quant_levels

INT4_OPSET = 21


def to_opset_21(proto):
    """The model converted to opset 21 (IR version 10), the first with INT4."""
    import onnx
    from onnx import version_converter

    converted = version_converter.convert_version(proto, INT4_OPSET)
    converted.ir_version = max(converted.ir_version, 10)
    onnx.checker.check_model(converted)
    return converted


def _weight_axis(node):
    """`(weight input index, output-channel axis)` of a Conv / MatMul / Gemm node."""
    if node.op_type == "Conv":
        return 1, 0
    if node.op_type == "MatMul":
        return 1, 1
    trans_b = any(a.name == "transB" and a.i for a in node.attribute)
    return 1, 0 if trans_b else 1


def write_int4_initializers(proto, model, graph):
    """Stores the kernels of `model`'s layers trained at <= 4 bits as INT4 + DequantizeLinear.

    Args:
        proto: the opset-21 `onnx.ModelProto` converted from `graph`.
        model: the Keras model (each layer's kernel bit-width).
        graph: its export graph (each layer's `kernel_range`).

    Returns:
        `(proto, names)`: the model (changed in place) and the layers whose
        kernels went INT4.
    """
    from onnx import TensorProto
    from onnx import helper
    from onnx import numpy_helper

    layers = {layer.name: layer for layer in model_graph.flat_layers(model)}
    graph_layers = {layer.name: layer for layer in model_graph.flat_layers(graph)}
    initializers = {init.name: init for init in proto.graph.initializer}
    done, new_nodes = [], []
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        # tf2onnx names a Conv fused with its bias Add "Conv__<n>": then the
        # weight's or the bias's name holds the layer scope (never input 0,
        # which is the previous layer's output).
        name = next(
            (
                found
                for found in (layer_of(text, graph_layers) for text in [node.name, *node.input[1:]])
                if found
            ),
            "",
        )
        layer, export_layer = layers.get(name), graph_layers.get(name)
        bits = weight_bits(layer) if layer is not None else None
        kernel_range = getattr(export_layer, "kernel_range", None)
        index, axis = _weight_axis(node)
        if (
            bits is None
            or bits > 4
            or not kernel_range
            or name in done
            or len(node.input) <= index
            or node.input[index] not in initializers
        ):
            continue
        weight = numpy_helper.to_array(initializers[node.input[index]]).astype(np.float64)
        qn, qp = quant_levels(bits, True, getattr(layer.kernel_quantizer, "narrow_range", False))
        k = ranges.INT8_NARROW_MAX // max(qn, qp)
        step = np.float32(
            np.abs(np.asarray(kernel_range[1], np.float64)) / ranges.INT8_NARROW_MAX * k
        )
        if weight.shape[axis] != step.size:
            continue
        shape = [1] * weight.ndim
        shape[axis] = -1
        ratio = weight / step.astype(np.float64).reshape(shape)
        codes = np.round(ratio)
        if np.abs(ratio - codes).max() > 1e-3 or codes.min() < INT4_MIN or codes.max() > INT4_MAX:
            continue  # Not on its 4-bit grid: the float initializer stays.
        base = node.input[index]
        packed = helper.make_tensor(
            f"{base}_int4",
            TensorProto.INT4,
            weight.shape,
            codes.astype(np.int8).reshape(-1).tolist(),
        )
        scale = numpy_helper.from_array(step, f"{base}_int4_scale")
        proto.graph.initializer.extend([packed, scale])
        new_nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [packed.name, scale.name],
                [f"{base}_int4_dq"],
                axis=axis,
                name=f"{name}/int4_weights",
            )
        )
        node.input[index] = f"{base}_int4_dq"
        done.append(name)
    for position, node in enumerate(new_nodes):
        proto.graph.node.insert(position, node)
    used = {i for node in proto.graph.node for i in node.input}
    kept = [init for init in proto.graph.initializer if init.name in used]
    del proto.graph.initializer[:]
    proto.graph.initializer.extend(kept)
    return proto, done
