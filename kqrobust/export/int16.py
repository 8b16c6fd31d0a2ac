"""TFLite's 16x8 mode: int16 activations, int8 per-channel weights.

The TF converter's 16x8 op set
(`EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8`) does not
accept FakeQuant ops ("Quantization to 16x8-bit not yet supported for op:
'DEQUANTIZE'"), so the model is converted from the float export graph (BN and
weight transforms folded, kernels on their trained grids, no FakeQuant), and
every activation range comes from calibration over the representative data:
the converter's min/max, symmetric int16 with zero point 0. Learned 8-bit
clip ranges are not applied: int16 is there to keep what 8 bits clip or round.

The converter re-quantizes each kernel with its own scale `max|w_c| / 127`.
`write_weight_grids_16x8` then puts every kernel that has a trained grid
back on it: int8 values `k * codes` with the scale `s_c / k` (`ranges.py`),
recovered exactly from the converter's values (its scale is never coarser
than `s_c / k`, so each value is within half a step of the grid), and the
int64 bias re-rounded to `s_in * s_c / k`.

References:
    TensorFlow Lite, "Post-training integer quantization with int16
    activations" (16x8 quantization mode).
"""

import tempfile

import numpy as np
import tensorflow as tf

from kqrobust import model_graph
from kqrobust.export import ranges
from kqrobust.export.int4 import _own_buffer
from kqrobust.export.int4 import _schema
from kqrobust.export.int4 import read_model
from kqrobust.export.int4 import write_model

IO_DTYPES_16X8 = {"int16": tf.int16, "float32": tf.float32}


def convert_16x8(graph, data, shape, io_dtype):
    """Converts the float export `graph` in 16x8 mode, calibrated on `data`."""
    with tempfile.TemporaryDirectory(prefix="kqrobust_export_") as saved:
        signature = [tf.TensorSpec((1,) + tuple(shape), tf.float32, name="input")]
        graph.export(saved, format="tf_saved_model", verbose=False, input_signature=signature)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in data)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
        converter.inference_input_type = IO_DTYPES_16X8[io_dtype]
        converter.inference_output_type = IO_DTYPES_16X8[io_dtype]
        return converter.convert()


def _grid_scales(grid_graph):
    """`{layer name: per-channel int8 scale t_c}` of the layers with a trained grid."""
    found = {}
    for layer in model_graph.flat_layers(grid_graph):
        kernel_range = getattr(layer, "kernel_range", None)
        if kernel_range:
            found[layer.name] = (
                np.abs(np.asarray(kernel_range[1], np.float64)) / ranges.INT8_NARROW_MAX
            )
    return found


def _regrid(model, subgraph, op, target):
    """Puts one op's int8 weights on the per-channel scale `target`; True if done."""
    schema = _schema()
    weight = subgraph.tensors[op.inputs[1]]
    params = weight.quantization
    if (
        weight.type != schema.TensorType.INT8
        or params is None
        or params.scale is None
        or len(params.scale) != target.size
    ):
        return False
    axis = params.quantizedDimension
    shape = [int(d) for d in weight.shape]
    old = np.frombuffer(bytes(model.buffers[weight.buffer].data), np.int8).reshape(shape)
    broadcast = [1] * len(shape)
    broadcast[axis] = -1
    old_scale = np.asarray(params.scale, np.float64).reshape(broadcast)
    new_scale = np.float32(target).astype(np.float64).reshape(broadcast)
    if np.any(old_scale > new_scale * (1 + 1e-5)):
        return False  # A coarser converter grid: not this layer's trained grid.
    values = np.round(old * old_scale / new_scale)
    if np.abs(values).max() > ranges.INT8_NARROW_MAX:
        return False
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        bias = subgraph.tensors[op.inputs[2]]
        if bias.type != schema.TensorType.INT64 or bias.quantization is None:
            return False
        input_scale = np.float64(subgraph.tensors[op.inputs[0]].quantization.scale[0])
        old_bias = np.frombuffer(bytes(model.buffers[bias.buffer].data), "<i8").astype(np.float64)
        step = np.float32(input_scale * new_scale.reshape(-1)).astype(np.float64)
        old_step = np.asarray(bias.quantization.scale, np.float64)
        _own_buffer(model, bias).data = (
            np.round(old_bias * old_step / step).astype("<i8").view(np.uint8)
        )
        bias.quantization.scale = [float(v) for v in step]
    _own_buffer(model, weight).data = values.astype(np.int8).reshape(-1).view(np.uint8)
    params.scale = [float(v) for v in new_scale.reshape(-1)]
    return True


def write_weight_grids_16x8(flatbuffer, grid_graph):
    """Puts the int8 kernels of a 16x8 `flatbuffer` on their trained grids.

    Args:
        flatbuffer: the converted 16x8 model (bytes).
        grid_graph: an export graph of the same model with each layer's
            `kernel_range` (`kq.export.export_model(model)`).

    Returns:
        The rewritten bytes, and the names of the layers put on their grids.
    """
    from kqrobust.export.tflite_weights import _names_of

    scales = _grid_scales(grid_graph)
    tree = read_model(flatbuffer)
    done = []
    for subgraph in tree.subgraphs:
        for op in subgraph.operators:
            if len(op.inputs) < 2 or op.inputs[1] < 0:
                continue
            for name in _names_of(scales, subgraph.tensors[op.inputs[1]].name.decode()):
                if name not in done and _regrid(tree, subgraph, op, scales[name]):
                    done.append(name)
                    break
    return write_model(tree), done
