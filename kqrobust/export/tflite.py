"""`to_tflite`: full-integer (or float) TFLite from a Keras model."""

import re
import tempfile

import numpy as np
import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.atomic import atomic_write_bytes
from kqrobust.export.graph import export_model
from kqrobust.export.representative import representative_array
from kqrobust.export.tflite_weights import write_weight_grids

IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}


def _check_shape(model, input_shape):
    if input_shape is not None:
        return validation.shape_tuple(input_shape)
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"Model '{model.name}' has an input with unknown dimensions {shape}. "
            "TFLite (and the Edge TPU) need static shapes. Fix: pass a fixed "
            "input_shape, e.g. input_shape=(32, 32, 3).")
    return shape


def _layer_in(text, graph):
    """The graph layer whose name appears as a path element of `text`."""
    names = sorted((layer.name for layer in model_graph.flat_layers(graph)),
                   key=len, reverse=True)
    for name in names:
        if re.search(rf"[/\"']{re.escape(name)}(_\d+)?[/\"':]", text):
            return graph.get_layer(name)
    return None


def _unquantizable(layer, ops):
    return ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be converted to "
        f"full-integer TFLite ops (TFLITE_BUILTINS_INT8): {', '.join(ops) or 'unknown op'}. "
        "Fix: replace it with a layer TFLite quantizes (Conv2D, DepthwiseConv2D, "
        "Dense, Add, pooling, ReLU, Reshape, ...) or export with quantize=False.")


def _converter_error(error, graph):
    """A ValueError naming the layer the converter failed on."""
    message = str(error)
    layer = _layer_in(message, graph)
    if layer is not None:
        return _unquantizable(layer, sorted(set(re.findall(r"'(tfl?\.\w+)'", message))))
    first = message.strip().splitlines()[0] if message.strip() else type(error).__name__
    return ValueError(f"The TFLite converter failed: {first}")


def float_ops(flatbuffer):
    """`[(op name, output tensor name)]` of the ops that compute in float.

    QUANTIZE ops that read a float model input and DEQUANTIZE ops that write
    a float model output are the I/O conversion, not float compute.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    outputs = {d["index"] for d in interpreter.get_output_details()}
    found = []
    for op in interpreter._get_ops_details():  # The public API has no op list.
        if op["op_name"] == "DELEGATE":
            continue
        if op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= inputs:
            continue
        if op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= outputs:
            continue
        for index in op["outputs"]:
            if tensors[index]["dtype"] == np.float32:
                found.append((op["op_name"], tensors[index]["name"]))
    return found


def to_tflite(model, representative_data=None, path=None, io_dtype="int8", quantize=True,
              input_shape=None, num_samples=200):
    """Converts a Keras model to a TFLite flatbuffer, full integer by default.

    Builds the export graph (`export_model`: BN and weight transforms folded,
    FakeQuant ops with the learned ranges, every other tensor's range from
    `representative_data`), exports it as a SavedModel and converts it with
    `optimizations=[DEFAULT]` and `TFLITE_BUILTINS_INT8` only, so every op is
    an int8 kernel. All ranges come from the graph's FakeQuant ops (the
    converter also gets the same samples, which it asks for, but finds every
    tensor annotated). The batch size is fixed to 1.

    Args:
        model: a model from `kq.quantize_model`, `kq.ptq.quantize`,
            `kq.robustify`, or a plain Keras Sequential/Functional model.
        representative_data: input samples (array, `(x, y)`, `tf.data` or
            iterable) for the ranges no quantizer holds. Needed when
            `quantize`.
        path: where to write the `.tflite` file, or None. The file is
            written atomically (a temporary file in its directory, then
            renamed); a missing directory is created, as by `to_onnx`.
        io_dtype: "int8", "uint8" (Edge TPU, most NPUs) or "float32" (int8
            inside, float at the boundary).
        quantize: False gives a float TFLite model of the folded graph, for
            comparison.
        input_shape: fixed input shape (without batch) for models with
            unknown spatial dimensions.
        num_samples: how many representative samples are used (a positive
            int; only these are read from `representative_data`).

    Returns:
        The flatbuffer as bytes.

    Example:
        >>> kq.export.to_tflite(qmodel, x_train[:200], "model.tflite", io_dtype="uint8")

    References:
        Jacob et al., "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018 (the int8
        scheme); TensorFlow Lite 8-bit quantization spec.
    """
    model_graph.check_graph_model(model, "kq.export.to_tflite")
    if io_dtype not in IO_DTYPES:
        raise ValueError(
            f"io_dtype must be one of {sorted(IO_DTYPES)}. Received: io_dtype={io_dtype!r}")
    shape = _check_shape(model, input_shape)
    data = representative_array(representative_data, shape, num_samples) if quantize else None
    graph = export_model(model, data, input_shape=shape, batch_size=1, fake_quant=quantize,
                         num_samples=num_samples)
    with tempfile.TemporaryDirectory(prefix="kqrobust_export_") as saved:
        signature = [tf.TensorSpec((1,) + shape, tf.float32, name="input")]
        graph.export(saved, format="tf_saved_model", verbose=False,
                     input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            # Every tensor already has its FakeQuant range; the converter still
            # asks for data when it cannot tell the graph is fully annotated.
            converter.representative_dataset = lambda: ([x[None]] for x in data)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = IO_DTYPES[io_dtype]
            converter.inference_output_type = IO_DTYPES[io_dtype]
        elif io_dtype != "float32":
            raise ValueError(
                f"A float export (quantize=False) has float32 inputs and outputs. "
                f"Received: io_dtype={io_dtype!r}. Fix: pass io_dtype='float32'.")
        try:
            flatbuffer = converter.convert()
        except Exception as error:  # The converter raises ConverterError and others.
            raise _converter_error(error, graph) from error
    if quantize:
        flatbuffer, _ = write_weight_grids(flatbuffer, graph)  # Dense, depthwise: exact codes
        leftovers = float_ops(flatbuffer)
        if leftovers:
            compute = [item for item in leftovers if item[0] not in ("QUANTIZE", "DEQUANTIZE")]
            op, tensor = (compute or leftovers)[0]
            layer = _layer_in(tensor, graph)
            if layer is None:
                raise ValueError(
                    f"The converted model still computes {op} in float (tensor "
                    f"'{tensor}'). Fix: replace the op with one TFLite quantizes.")
            raise _unquantizable(layer, [op])
    if path is not None:
        atomic_write_bytes(path, flatbuffer)
    return flatbuffer
