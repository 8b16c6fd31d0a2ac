"""`to_onnx`: a QDQ ONNX model through tf2onnx."""

import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.atomic import atomic_write_bytes
from kqrobust.export.graph import export_model

DEFAULT_OPSET = 17


def to_onnx(model, path=None, opset=DEFAULT_OPSET, input_shape=None):
    """Converts a Keras model to ONNX with QuantizeLinear/DequantizeLinear pairs.

    Converts the export graph (`export_model` without representative data:
    BN and weight transforms folded, 8-bit FakeQuant ops with the learned
    input ranges and Conv2D weight ranges) with tf2onnx, which turns each
    FakeQuant into a QuantizeLinear/DequantizeLinear pair. Tensors that no
    quantizer covers stay float (a QDQ model: runtimes fuse what they can).
    The batch axis stays dynamic.

    Args:
        model: a model from `kq.quantize_model`, `kq.ptq.quantize`,
            `kq.robustify`, or a plain Keras Sequential/Functional model.
        path: where to write the `.onnx` file, or None. The file is written
            atomically (a temporary file in its directory, then renamed); a
            missing directory is created.
        opset: the ONNX opset, >= 13 (per-axis QuantizeLinear); 17 by default.
        input_shape: optional fixed input shape without the batch axis, a
            tuple of positive ints such as `(32, 32, 3)`.

    Returns:
        The `onnx.ModelProto`.

    Example: `kq.export.to_onnx(qmodel, "model.onnx")`; docs/export.md
    ("ONNX") runs it.

    References:
        ONNX operators QuantizeLinear / DequantizeLinear (opset 13+).
    """
    import tf2onnx

    model_graph.check_graph_model(model, "kq.export.to_onnx")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 13:
        raise ValueError(
            f"opset must be an int >= 13 (per-axis QuantizeLinear). Received: opset={opset!r}")
    if input_shape is not None:
        input_shape = validation.shape_tuple(input_shape)
    graph = export_model(model, input_shape=input_shape)
    source = graph.inputs[0]
    signature = [tf.TensorSpec((None,) + tuple(source.shape[1:]), tf.float32, name="input")]
    proto, _ = tf2onnx.convert.from_keras(graph, input_signature=signature, opset=opset)
    if path is not None:
        atomic_write_bytes(path, proto.SerializeToString())
    return proto
