"""`to_onnx`: a QDQ ONNX model through tf2onnx."""

import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.atomic import atomic_write_bytes
from kqrobust.export import int4
from kqrobust.export import onnx_int4
from kqrobust.export.graph import export_model

DEFAULT_OPSET = 17
MAX_TF2ONNX_OPSET = 18  # tf2onnx 1.17's newest; INT4 models are converted up to 21 after


def to_onnx(model, path=None, opset=None, input_shape=None, weight_dtype="int8"):
    """Converts a Keras model to ONNX with QuantizeLinear/DequantizeLinear pairs.

    Converts the export graph (`export_model` without representative data:
    BN and weight transforms folded, 8-bit FakeQuant ops with the learned
    input ranges and Conv2D weight ranges) with tf2onnx, which turns each
    FakeQuant into a QuantizeLinear/DequantizeLinear pair. Tensors that no
    quantizer covers stay float (a QDQ model: runtimes fuse what they can).
    The batch axis stays dynamic.

    `weight_dtype="int4"` stores the kernels of layers trained at 4 bits or
    fewer as INT4 initializers with a per-axis `DequantizeLinear` (opset 21,
    `onnx_int4.py`); the other kernels stay float on their grids, as in the
    int8 export.

    Args:
        model: a model from `kq.quantize_model`, `kq.ptq.quantize`,
            `kq.robustify`, or a plain Keras Sequential/Functional model.
        path: where to write the `.onnx` file, or None. The file is written
            atomically (a temporary file in its directory, then renamed); a
            missing directory is created.
        opset: the ONNX opset, >= 13 (per-axis QuantizeLinear); None is 17,
            or 21 with `weight_dtype="int4"` (which needs 21).
        input_shape: optional fixed input shape without the batch axis, a
            tuple of positive ints such as `(32, 32, 3)`.
        weight_dtype: "int8", or "int4" (the model needs a layer trained at
            <= 4 bits).

    Returns:
        The `onnx.ModelProto`.

    Example: `kq.export.to_onnx(qmodel, "model.onnx")`, or
    `weight_dtype="int4"` for a 4-bit model; docs/export.md ("ONNX") runs it.

    References:
        ONNX operators QuantizeLinear / DequantizeLinear (opset 13+; INT4
        from opset 21).
    """
    import tf2onnx

    model_graph.check_graph_model(model, "kq.export.to_onnx")
    validation.one_of(weight_dtype, "weight_dtype", ("int8", "int4"))
    if opset is None:
        opset = onnx_int4.INT4_OPSET if weight_dtype == "int4" else DEFAULT_OPSET
    validation.int_at_least(
        opset, "opset", 13, fix="ONNX has per-axis QuantizeLinear from opset 13; pass 13 or later."
    )
    if weight_dtype == "int4" and opset < onnx_int4.INT4_OPSET:
        raise ValueError(
            f"weight_dtype='int4' needs ONNX opset >= 21 (INT4 DequantizeLinear). Received: "
            f"opset={opset}. Fix: pass opset=21 or leave opset unset."
        )
    if opset > MAX_TF2ONNX_OPSET and weight_dtype == "int8":
        raise ValueError(
            f"tf2onnx converts up to opset {MAX_TF2ONNX_OPSET}. Received: opset={opset}. "
            "Fix: pass opset <= 18 (opset 21 is for weight_dtype='int4')."
        )
    if weight_dtype == "int4" and not int4.low_bit_layers(model):
        raise ValueError(
            "weight_dtype='int4' stores the kernels of layers trained at 4 bits or fewer as "
            f"INT4, and model '{model.name}' has none. Fix: train the layers at weight_bits "
            "<= 4, or export with weight_dtype='int8'."
        )
    if input_shape is not None:
        input_shape = validation.shape_tuple(input_shape)
    graph = export_model(model, input_shape=input_shape)
    source = graph.inputs[0]
    signature = [tf.TensorSpec((None,) + tuple(source.shape[1:]), tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(
        graph, input_signature=signature, opset=min(opset, MAX_TF2ONNX_OPSET)
    )
    if weight_dtype == "int4":
        proto = onnx_int4.to_opset_21(proto)
        proto, done = onnx_int4.write_int4_initializers(proto, model, graph)
        if not done:
            raise ValueError(
                f"weight_dtype='int4': no kernel of model '{model.name}' is on a 4-bit grid "
                "in the ONNX graph. Fix: export with weight_dtype='int8'."
            )
    if path is not None:
        atomic_write_bytes(path, proto.SerializeToString())
    return proto
