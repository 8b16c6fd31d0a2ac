"""Stores the kernels of layers trained at 4 bits or fewer as INT4 tensors.

A full-integer export holds a `b`-bit kernel (`b <= 4`) as int8 values
`k * codes` with the per-channel scale `t_c = s_c / k` (`ranges.py`,
`tflite_weights.py`; `k = floor(127 / max(Qn, Qp))`). This module rewrites
such a weight tensor, after conversion, as a LiteRT INT4 tensor holding the
codes themselves with the scale `s_c = k * t_c`:

- the codes are the int8 values divided by `k`, checked to be exact and
  inside INT4's `[-8, 7]` (a folded BatchNorm with a negative scale turns a
  4-bit code -8 into +8: that layer stays int8);
- the data is packed two codes per byte, the first element in the low nibble
  (LiteRT's `tensor_utils::UnpackDenseInt4IntoInt8` order, checked against
  LiteRT's kernels in `tests/export/test_int4.py`);
- the int32 bias is re-rounded to the grid the TFLite specification ties to
  the weight scale, `s_in * s_c` (`k` times coarser than the int8 file's).

Nothing is recalibrated and no value is rounded twice: the codes are the QAT
model's, read from the converted int8 file.

LiteRT 2.3's CPU kernels run INT4 filters with int8 activations in CONV_2D,
DEPTHWISE_CONV_2D and FULLY_CONNECTED, and with int16 activations in CONV_2D
and FULLY_CONNECTED (measured: outputs equal to the same model with the codes
stored as int8; `INT4_OPS`). XNNPACK delegates only the FULLY_CONNECTED ones;
INT4 CONV_2D and DEPTHWISE_CONV_2D run on LiteRT's builtin kernels.

References:
    LiteRT schema (`ai_edge_litert.schema_py_generated`): `TensorType.INT4`.
    TensorFlow Lite 8-bit quantization specification (per-axis weights, zero
    point 0, bias scale `input_scale * weight_scale`).
"""

import dataclasses

import numpy as np

from kqrobust import model_graph
from kqrobust.export import ranges
from kqrobust.ops.lsq import quant_levels

INT4_MIN, INT4_MAX = -8, 7

# Ops whose LiteRT 2.3 CPU kernels compute correctly with an INT4 filter
# (input 1), by activation type (measured against the same codes in int8:
# DEPTHWISE_CONV_2D with int16 activations and an INT4 filter runs but gives
# wrong outputs, so it is left out).
INT4_OPS = {
    "int8": ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"),
    "int16": ("CONV_2D", "FULLY_CONNECTED"),
}


@dataclasses.dataclass
class Int4Layer:
    """One layer's weight tensor in an INT4 export.

    Attributes:
        layer: the layer name.
        op: the TFLite op that holds the kernel.
        weight_dtype: "int4" or "int8".
        reason: why the kernel stayed int8 ('' when it went INT4).
    """

    layer: str
    op: str
    weight_dtype: str
    reason: str = ""


def _schema():
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def read_model(flatbuffer):
    """The flatbuffer as a mutable `ModelT` (LiteRT's object API)."""
    schema = _schema()
    return schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytearray(flatbuffer), 0))


def write_model(model):
    """A `ModelT` back to flatbuffer bytes."""
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_names(model):
    """The builtin op name of every operator code of `model`."""
    names = {v: k for k, v in vars(_schema().BuiltinOperator).items() if not k.startswith("_")}
    return [
        names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM")
        for c in model.operatorCodes
    ]


def pack_int4(codes):
    """Packs int codes in `[-8, 7]` two per byte, the first in the low nibble."""
    codes = np.asarray(codes).reshape(-1)
    if codes.size and (codes.min() < INT4_MIN or codes.max() > INT4_MAX):
        raise ValueError(f"INT4 codes must be in [-8, 7]. Received: [{codes.min()}, {codes.max()}]")
    nibbles = (codes.astype(np.int16) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)


def unpack_int4(packed, size):
    """The `size` signed codes of packed INT4 bytes (the inverse of `pack_int4`)."""
    packed = np.asarray(packed, np.uint8)
    nibbles = np.stack([packed & 0xF, packed >> 4], axis=1).reshape(-1)[:size].astype(np.int8)
    return np.where(nibbles > 7, nibbles - 16, nibbles).astype(np.int8)


def weight_bits(layer):
    """The bit-width of a layer's kernel quantizer, or None (a float layer)."""
    quantizer = getattr(layer, "kernel_quantizer", None)
    return getattr(quantizer, "bits", None)


def low_bit_layers(model, max_bits=4):
    """`{name: bits}` of the model's layers whose kernels are quantized at <= `max_bits`."""
    found = {}
    for layer in model_graph.flat_layers(model):
        bits = weight_bits(layer)
        if bits is not None and bits <= max_bits:
            found[layer.name] = bits
    return found


def _is_constant(model, tensor):
    """True when the tensor holds data (a weight), not an activation."""
    data = model.buffers[tensor.buffer].data if 0 < tensor.buffer < len(model.buffers) else None
    return data is not None and len(data) > 0


def _buffer_users(model, index):
    return sum(t.buffer == index for sg in model.subgraphs for t in sg.tensors)


def _own_buffer(model, tensor):
    """The tensor's buffer, copied first when another tensor shares it."""
    if _buffer_users(model, tensor.buffer) > 1:
        copy = _schema().BufferT()
        copy.data = np.array(model.buffers[tensor.buffer].data, np.uint8)
        model.buffers.append(copy)
        tensor.buffer = len(model.buffers) - 1
    return model.buffers[tensor.buffer]


def _to_int4(model, subgraph, op, k):
    """Rewrites one op's int8 weights `k * codes` as INT4 codes; '' or why not."""
    schema = _schema()
    weight = subgraph.tensors[op.inputs[1]]
    params = weight.quantization
    if weight.type != schema.TensorType.INT8 or params is None or params.scale is None:
        return "the converter did not store its weights as int8"
    values = np.frombuffer(bytes(model.buffers[weight.buffer].data), np.int8).astype(np.int32)
    codes = values // k
    if np.any(codes * k != values):
        return f"its int8 weights are not {k} x codes (not on the trained grid)"
    if codes.min() < INT4_MIN or codes.max() > INT4_MAX:
        return (
            f"a code is {int(codes.max()) if codes.max() > INT4_MAX else int(codes.min())}, "
            "outside INT4's [-8, 7] (a folded BatchNorm with a negative scale flips -8 to +8)"
        )
    old_scale = np.asarray(params.scale, np.float64)
    new_scale = np.float32(old_scale * k).astype(np.float64)
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = subgraph.tensors[op.inputs[2]]
        dtype = {schema.TensorType.INT32: "<i4", schema.TensorType.INT64: "<i8"}.get(bias.type)
        if dtype is None:
            return "its bias is neither int32 nor int64"
        input_scale = np.float64(subgraph.tensors[op.inputs[0]].quantization.scale[0])
        old_bias = np.frombuffer(bytes(model.buffers[bias.buffer].data), dtype).astype(np.float64)
        old_step = np.asarray(bias.quantization.scale, np.float64)
        bias_step = np.float32(input_scale * new_scale).astype(np.float64)
        new_bias = np.round(old_bias * old_step / bias_step)
        if dtype == "<i4" and np.abs(new_bias).max(initial=0) >= 2**31:
            return "its bias does not fit int32 at the INT4 scale"
        _own_buffer(model, bias).data = new_bias.astype(dtype).view(np.uint8)
        bias.quantization.scale = [float(v) for v in bias_step]
    _own_buffer(model, weight).data = pack_int4(codes)
    weight.type = schema.TensorType.INT4
    params.scale = [float(v) for v in new_scale]
    return ""


def write_int4_weights(flatbuffer, model, layer_names, activation_dtype="int8"):
    """Stores the kernels of `model`'s layers trained at <= 4 bits as INT4.

    Args:
        flatbuffer: a full-integer `.tflite` (bytes) converted from
            `model`'s export graph, its kernels on their grids
            (`kq.export.to_tflite`).
        model: the Keras model it was exported from (for each layer's
            kernel bit-width and code multiplier `k`).
        layer_names: the names of the layers in the flatbuffer's tensor
            names (the export graph's layers).
        activation_dtype: "int8" or "int16" (16x8 files): which ops take
            INT4 filters (`INT4_OPS`).

    Returns:
        `(flatbuffer, [Int4Layer])`: the rewritten bytes, and one entry per
        op that holds a registered layer's kernel.
    """
    from kqrobust.export.tflite_weights import _names_of

    layers = {layer.name: layer for layer in model_graph.flat_layers(model)}
    tree = read_model(flatbuffer)
    names = op_names(tree)
    report = []
    for subgraph in tree.subgraphs:
        for op in subgraph.operators:
            if len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            weight_name = subgraph.tensors[op.inputs[1]].name.decode()
            matches = [n for n in _names_of(layer_names, weight_name) if n in layers]
            if not matches or not _is_constant(tree, subgraph.tensors[op.inputs[1]]):
                continue
            name, op_name = matches[0], names[op.opcodeIndex]
            layer = layers[name]
            bits = weight_bits(layer)
            if bits is None:
                report.append(Int4Layer(name, op_name, "int8", "not quantized (float kernel)"))
                continue
            if bits > 4:
                report.append(Int4Layer(name, op_name, "int8", f"trained at {bits} bits"))
                continue
            if op_name not in INT4_OPS[activation_dtype]:
                report.append(
                    Int4Layer(
                        name,
                        op_name,
                        "int8",
                        f"LiteRT has no INT4 kernel for "
                        f"{op_name} with {activation_dtype} activations",
                    )
                )
                continue
            narrow = getattr(layer.kernel_quantizer, "narrow_range", False)
            qn, qp = quant_levels(bits, True, narrow)
            k = ranges.INT8_NARROW_MAX // max(qn, qp)
            reason = _to_int4(tree, subgraph, op, k)
            report.append(Int4Layer(name, op_name, "int8" if reason else "int4", reason))
    return write_model(tree), report
