"""Writes the weight grid into a converted `.tflite` (Dense, DepthwiseConv2D, ...).

The TFLite converter quantizes a constant kernel per channel with the scale
`max|w_c| / 127`, so a kernel stored on a grid `codes * s_c` comes out as
`round(codes * 127 / max|codes|)`: close to the grid, not on it (a 4-bit
code 1 with `max|codes| = 8` becomes 16 * (8 s / 127) = 1.008 s). Conv2D
kernels avoid that with a per-channel FakeQuant, which the converter does
not accept for FULLY_CONNECTED and DEPTHWISE_CONV_2D ("mismatched quantized
axes"). For the layer types registered with a `tflite_weights` layout
(`kq.layers.registry`) this module sets, after conversion, the scale of
channel `c` to the export layer's int8 scale `t_c = s_c / k` (from its
`kernel_range`, see `ranges.py`), the int8 values to `k * codes`, and the
int32 bias to `round(b_c / (s_in * t_c))` with its scale `s_in * t_c`, as
the TFLite int8 specification requires. The model then computes with
exactly the weights of the Keras model, as the Conv2D layers do.

References:
    TensorFlow Lite 8-bit quantization specification (per-axis int8
    weights, zero point 0, in [-127, 127]; int32 bias of scale
    `input_scale * weight_scale`).
"""

import re

import numpy as np

from kqrobust import model_graph
from kqrobust.export import ranges
from kqrobust.layers import registry

INT8 = 9  # tflite::TensorType
INT32 = 2


def _layout(layer):
    """The registered `TfliteWeights` of an export layer, or None."""
    layer_type = registry.layer_type_of(layer)
    return None if layer_type is None else layer_type.tflite_weights


def _scales_by_layer(graph):
    """`{layer name: (layer, per-channel int8 scales)}` for the layers to rewrite."""
    scales = {}
    for layer in model_graph.flat_layers(graph):
        if _layout(layer) is not None and getattr(layer, "kernel_range", None):
            hi = np.asarray(layer.kernel_range[1], np.float64)
            scales[layer.name] = (layer, hi / ranges.INT8_NARROW_MAX)
    return scales


def _along(values, axis, ndim):
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(values, np.float64).reshape(shape)


def _own_buffer(model, tensor):
    """The tensor's buffer, copied first when another tensor shares it."""
    users = sum(t.buffer == tensor.buffer for sg in model.subgraphs for t in sg.tensors)
    if users > 1:
        from tensorflow.lite.python import schema_py_generated as schema

        copy = schema.BufferT()
        copy.data = np.array(model.buffers[tensor.buffer].data, np.uint8)
        model.buffers.append(copy)
        tensor.buffer = len(model.buffers) - 1
    return model.buffers[tensor.buffer]


def _names_of(layer_names, tensor_name):
    """The layer names that are a path element of the tensor's name, longest
    first (Keras may add a `_<n>` suffix to the op scope, so the scope
    `dense_1` can be layer `dense_1` or layer `dense`; `_rewrite` checks the
    kernel)."""
    found = [
        n for n in layer_names if re.search(rf"(^|[/;]){re.escape(n)}(_\d+)?(/|;|$)", tensor_name)
    ]
    return sorted(found, key=len, reverse=True)


def _rewrite(model, subgraph, op, layer, scale):
    """Puts one op's weights (and bias) on the per-channel int8 `scale`.

    Returns False, changing nothing, when the op's tensors do not fit the
    layer or its kernel is not on the grid: the op keeps the converter's
    weights.
    """
    weight = subgraph.tensors[op.inputs[1]]
    params = weight.quantization
    layout = _layout(layer)
    kernel = layout.weights_of(layer)
    axis = layout.axis
    if (
        weight.type != INT8
        or params is None
        or len(params.scale) != scale.size
        or tuple(weight.shape) != kernel.shape
        or params.quantizedDimension != axis
    ):
        return False
    old = np.frombuffer(bytes(model.buffers[weight.buffer].data), np.int8).reshape(kernel.shape)
    old_scale = _along(params.scale, axis, kernel.ndim)
    if np.any(np.abs(old * old_scale - kernel) > 0.51 * old_scale):
        return False  # Not this layer's kernel.
    ratio = kernel / _along(scale, axis, kernel.ndim)
    values = np.round(ratio)
    if np.abs(ratio - values).max() > 1e-3 or np.abs(values).max() > ranges.INT8_NARROW_MAX:
        return False  # Not on the grid.
    bias_index = op.inputs[layout.bias_index] if len(op.inputs) > layout.bias_index else -1
    if bias_index >= 0:
        bias = subgraph.tensors[bias_index]
        input_scale = np.float32(
            subgraph.tensors[op.inputs[layout.input_index]].quantization.scale[0]
        )
        bias_scale = input_scale * scale.astype(np.float32)
        bias_float = (
            np.zeros(scale.size)
            if getattr(layer, "bias", None) is None
            else np.asarray(layer.bias, np.float64).reshape(-1)
        )
        bias_int = np.round(bias_float / bias_scale.astype(np.float64))
        if bias.type != INT32 or bias.quantization is None or np.abs(bias_int).max() >= 2**31:
            return False
        _own_buffer(model, bias).data = bias_int.astype("<i4").view(np.uint8)
        bias.quantization.scale = [float(v) for v in bias_scale]
        bias.quantization.zeroPoint = [0] * scale.size
        bias.quantization.quantizedDimension = 0
    _own_buffer(model, weight).data = values.astype(np.int8).reshape(-1).view(np.uint8)
    params.scale = [float(np.float32(v)) for v in scale]
    params.zeroPoint = [0] * scale.size
    return True


def write_weight_grids(flatbuffer, graph):
    """Puts the kernels of `flatbuffer` on their grids, where the type needs it.

    Args:
        flatbuffer: the converted full-integer model (bytes).
        graph: the export graph it was converted from
            (`kq.export.export_model`).

    Returns:
        The rewritten flatbuffer (bytes), and the names of the layers whose
        weights were rewritten. A layer whose op cannot be matched to its
        kernel keeps the converter's weights.
    """
    scales = _scales_by_layer(graph)
    if not scales:
        return flatbuffer, []
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    op_types = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    done = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            names = (
                _names_of(scales, subgraph.tensors[op.inputs[1]].name.decode())
                if len(op.inputs) > 1 and op.inputs[1] >= 0
                else []
            )
            for name in names:
                layer, scale = scales[name]
                if (
                    name not in done
                    and op_types[op.opcodeIndex] == _layout(layer).op
                    and _rewrite(model, subgraph, op, layer, scale)
                ):
                    done.append(name)
                    break
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), done
