"""`to_tflite`: full-integer (or float) TFLite from a Keras model."""

import re
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from kqrobust import model_graph
from kqrobust import validation
from kqrobust.atomic import atomic_write_bytes
from kqrobust.export import int4
from kqrobust.export import int16
from kqrobust.export.graph import export_model
from kqrobust.export.representative import representative_array
from kqrobust.export.runtime import interpreter_ops
from kqrobust.export.runtime import litert_interpreter
from kqrobust.export.tflite_weights import write_weight_grids

IO_DTYPES = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}
WEIGHT_DTYPES = ("int8", "int4")
ACTIVATION_DTYPES = ("int8", "int16")
# The input/output types each activation type allows (16x8: int16 or float32).
IO_BY_ACTIVATION = {"int8": ("int8", "uint8", "float32"), "int16": ("int16", "float32")}


def _check_dtypes(model, io_dtype, weight_dtype, activation_dtype, quantize):
    """The resolved `io_dtype`; a ValueError for every unsupported combination."""
    validation.one_of(weight_dtype, "weight_dtype", WEIGHT_DTYPES)
    validation.one_of(activation_dtype, "activation_dtype", ACTIVATION_DTYPES)
    if not quantize:
        if weight_dtype != "int8" or activation_dtype != "int8":
            raise ValueError(
                "A float export (quantize=False) has no integer weights or activations. "
                f"Received: weight_dtype={weight_dtype!r}, activation_dtype={activation_dtype!r}. "
                "Fix: leave both at 'int8', or pass quantize=True."
            )
        return "float32" if io_dtype is None else io_dtype
    allowed = IO_BY_ACTIVATION[activation_dtype]
    if io_dtype is not None and io_dtype not in allowed:
        validation.one_of(io_dtype, "io_dtype", sorted(set(IO_DTYPES) | {"int16"}))
        raise ValueError(
            f"io_dtype must be one of {list(allowed)} with activation_dtype="
            f"{activation_dtype!r}. Received: io_dtype={io_dtype!r}. "
            f"Fix: pass io_dtype={allowed[0]!r} (or leave io_dtype unset)."
        )
    if weight_dtype == "int4":
        low = int4.low_bit_layers(model)
        if not low:
            trained = {
                layer.name: int4.weight_bits(layer)
                for layer in model_graph.flat_layers(model)
                if int4.weight_bits(layer) is not None
            }
            listed = ", ".join(f"'{n}' at {b} bits" for n, b in list(trained.items())[:4])
            raise ValueError(
                "weight_dtype='int4' stores the kernels of layers trained at 4 bits or fewer "
                f"as INT4, and model '{model.name}' has none "
                f"({'its quantized layers: ' + listed if listed else 'no quantized layer'}). "
                "INT4 would round the kernels a second time. Fix: train the layers at "
                "weight_bits <= 4 (kq.quantize_model(model, weight_bits=4)), or export with "
                "weight_dtype='int8'."
            )
    return activation_dtype if io_dtype is None else io_dtype


def _check_shape(model, input_shape):
    if input_shape is not None:
        return validation.shape_tuple(input_shape)
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(
            f"Model '{model.name}' has an input with unknown dimensions {shape}. "
            "TFLite (and the Edge TPU) need static shapes. Fix: pass a fixed "
            "input_shape, e.g. input_shape=(32, 32, 3)."
        )
    return shape


def _layer_in(text, graph):
    """The graph layer whose name appears as a path element of `text`."""
    names = sorted((layer.name for layer in model_graph.flat_layers(graph)), key=len, reverse=True)
    for name in names:
        if re.search(rf"[/\"']{re.escape(name)}(_\d+)?[/\"':]", text):
            return graph.get_layer(name)
    return None


def _unquantizable(layer, ops):
    return ValueError(
        f"Layer '{layer.name}' ({type(layer).__name__}) cannot be converted to "
        f"full-integer TFLite ops (TFLITE_BUILTINS_INT8): {', '.join(ops) or 'unknown op'}. "
        "Fix: replace it with a layer TFLite quantizes (Conv2D, DepthwiseConv2D, "
        "Dense, Add, pooling, ReLU, Reshape, ...) or export with quantize=False."
    )


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
    interpreter = litert_interpreter(flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    inputs = {d["index"] for d in interpreter.get_input_details()}
    outputs = {d["index"] for d in interpreter.get_output_details()}
    found = []
    for op in interpreter_ops(interpreter):
        if op["op_name"] == "QUANTIZE" and set(op["inputs"]) <= inputs:
            continue
        if op["op_name"] == "DEQUANTIZE" and set(op["outputs"]) <= outputs:
            continue
        for index in op["outputs"]:
            if tensors[index]["dtype"] == np.float32:
                found.append((op["op_name"], tensors[index]["name"]))
    return found


def to_tflite(
    model,
    representative_data=None,
    path=None,
    io_dtype=None,
    quantize=True,
    input_shape=None,
    num_samples=200,
    weight_dtype="int8",
    activation_dtype="int8",
):
    """Converts a Keras model to a TFLite flatbuffer, full integer by default.

    Builds the export graph (`export_model`: BN and weight transforms folded,
    FakeQuant ops with the learned ranges, every other tensor's range from
    `representative_data`), exports it as a SavedModel and converts it with
    `optimizations=[DEFAULT]` and `TFLITE_BUILTINS_INT8` only, so every op is
    an int8 kernel. All ranges come from the graph's FakeQuant ops (the
    converter also gets the same samples, which it asks for, but finds every
    tensor annotated). The batch size is fixed to 1.

    `weight_dtype="int4"` then stores the kernels of the layers trained at 4
    bits or fewer as LiteRT INT4 tensors holding the QAT codes themselves
    (`int4.py`: CONV_2D, DEPTHWISE_CONV_2D and FULLY_CONNECTED, the ops
    LiteRT has INT4 kernels for); every other tensor stays int8, and a
    low-bit layer that cannot go INT4 is named in a warning with the reason.
    `activation_dtype="int16"` is TFLite's 16x8 mode (`int16.py`): int16
    activations with ranges from calibration on `representative_data`, int8
    per-channel weights on their trained grids. INT4 and int16 files run on
    LiteRT's CPU kernels (and GPU delegates), not on the Edge TPU.

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
            inside, float at the boundary); "int16" or "float32" with int16
            activations. None (the default) is the activation type
            ("int8", or "int16"), and "float32" when not `quantize`.
        quantize: False gives a float TFLite model of the folded graph, for
            comparison.
        input_shape: fixed input shape (without batch) for models with
            unknown spatial dimensions.
        num_samples: how many representative samples are used (a positive
            int; only these are read from `representative_data`).
        weight_dtype: "int8", or "int4" (kernels trained at <= 4 bits stored
            as INT4; the model needs at least one such layer).
        activation_dtype: "int8", or "int16" (16x8 mode).

    Returns:
        The flatbuffer as bytes.

    Example: `kq.export.to_tflite(qmodel, x_train[:200], "model.tflite",
    io_dtype="uint8")`, or `weight_dtype="int4"` for a 4-bit model;
    docs/export.md runs it.

    References:
        Jacob et al., "Quantization and Training of Neural Networks for
        Efficient Integer-Arithmetic-Only Inference", CVPR 2018 (the int8
        scheme); TensorFlow Lite 8-bit quantization spec; TensorFlow Lite
        16x8 quantization mode.
    """
    model_graph.check_graph_model(model, "kq.export.to_tflite")
    io_dtype = _check_dtypes(model, io_dtype, weight_dtype, activation_dtype, quantize)
    if not (activation_dtype == "int16" and quantize):
        validation.one_of(io_dtype, "io_dtype", sorted(IO_DTYPES))
    shape = _check_shape(model, input_shape)
    data = representative_array(representative_data, shape, num_samples) if quantize else None
    if quantize and activation_dtype == "int16":
        flatbuffer = _to_tflite_16x8(model, data, shape, io_dtype, num_samples)
        if weight_dtype == "int4":
            flatbuffer = _int4(flatbuffer, model, export_model(model, input_shape=shape), "int16")
        if path is not None:
            atomic_write_bytes(path, flatbuffer)
        return flatbuffer
    graph = export_model(
        model, data, input_shape=shape, batch_size=1, fake_quant=quantize, num_samples=num_samples
    )
    with tempfile.TemporaryDirectory(prefix="kqrobust_export_") as saved:
        signature = [tf.TensorSpec((1,) + shape, tf.float32, name="input")]
        graph.export(saved, format="tf_saved_model", verbose=False, input_signature=signature)
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
                f"Received: io_dtype={io_dtype!r}. Fix: pass io_dtype='float32'."
            )
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
                    f"'{tensor}'). Fix: replace the op with one TFLite quantizes."
                )
            raise _unquantizable(layer, [op])
        if weight_dtype == "int4":
            flatbuffer = _int4(flatbuffer, model, graph, "int8")
    if path is not None:
        atomic_write_bytes(path, flatbuffer)
    return flatbuffer


def _int4(flatbuffer, model, graph, activation_dtype):
    """`int4.write_int4_weights`, with a warning naming the low-bit layers left int8."""
    names = [layer.name for layer in model_graph.flat_layers(graph)]
    flatbuffer, report = int4.write_int4_weights(flatbuffer, model, names, activation_dtype)
    left = [r for r in report if r.weight_dtype == "int8" and r.layer in int4.low_bit_layers(model)]
    if not any(r.weight_dtype == "int4" for r in report):
        reasons = "; ".join(f"'{r.layer}' ({r.op}): {r.reason}" for r in left) or "none matched"
        raise ValueError(
            f"weight_dtype='int4': no kernel of model '{model.name}' could be stored as INT4 "
            f"({reasons}). Fix: export with weight_dtype='int8'."
        )
    if left:
        warnings.warn(
            "weight_dtype='int4': these layers trained at <= 4 bits stay int8: "
            + "; ".join(f"'{r.layer}' ({r.op}): {r.reason}" for r in left),
            stacklevel=3,
        )
    return flatbuffer


def _to_tflite_16x8(model, data, shape, io_dtype, num_samples):
    """The 16x8 flatbuffer: the float export graph converted in 16x8 mode,
    its kernels put back on their trained grids."""
    graph = export_model(
        model, input_shape=shape, batch_size=1, fake_quant=False, num_samples=num_samples
    )
    try:
        flatbuffer = int16.convert_16x8(graph, data, shape, io_dtype)
    except Exception as error:  # The converter raises ConverterError and others.
        raise _converter_error(error, graph) from error
    grid_graph = export_model(model, input_shape=shape)
    flatbuffer, _ = int16.write_weight_grids_16x8(flatbuffer, grid_graph)
    leftovers = [
        item for item in float_ops(flatbuffer) if item[0] not in ("QUANTIZE", "DEQUANTIZE")
    ]
    if leftovers:
        op, tensor = leftovers[0]
        layer = _layer_in(tensor, graph)
        raise ValueError(
            f"The 16x8 model still computes {op} in float (tensor '{tensor}'"
            + (f", layer '{layer.name}'" if layer is not None else "")
            + "): TFLite has no int16 kernel for it. Fix: export with activation_dtype='int8'."
        )
    return flatbuffer
