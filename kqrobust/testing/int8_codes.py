"""The int8 kernels of a converted `.tflite` against the QAT codes of the Keras layers.

A kernel exported exactly holds `k * codes` in int8, `codes` the quantizer's
integer codes and `k = floor(127 / max(Qn, Qp))` (1 at 8 bits, 15 at 4 bits,
63 at 2 bits), with the sign of a folded BatchNorm's scale per output
channel (`kq.export.fold`).
"""

import keras
import numpy as np

from kqrobust.layers import registry

# A kernel_fake_quant layer type (Conv2D) without a registered layout:
# TFLite's CONV_2D weights are (out, kh, kw, in), quantized on axis 0.
_CONV_2D_LAYOUT = registry.TfliteWeights(3, lambda k: np.moveaxis(k, -1, 0), axis=0)


def tflite_int8_kernel(interpreter, layer_name):
    """The per-channel int8 weights of `layer_name` in a LiteRT interpreter,
    as `(channels, -1)` rows."""
    for tensor in interpreter.get_tensor_details():
        params = tensor["quantization_parameters"]
        if (
            tensor["dtype"] == np.int8
            and params["scales"].size > 1
            and f"/{layer_name}_1/" in tensor["name"]
        ):
            values = interpreter.get_tensor(tensor["index"])
            axis = params["quantized_dimension"]
            return np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1)
    raise AssertionError(f"no per-channel int8 weights for {layer_name}")


def kernel_codes(layer):
    """The integer codes `Q_w(transform(W)) / step` of a quantized layer,
    checked to be integers inside the quantizer's grid."""
    step = np.asarray(layer.kernel_quantizer.step(layer.kernel_quantizer_weights), np.float64)
    codes = np.asarray(keras.ops.convert_to_numpy(layer.quantized_kernel()), np.float64) / step
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    codes = np.round(codes)
    qn, qp = _grid(layer.kernel_quantizer.bits)
    assert -qn <= codes.min() and codes.max() <= qp, (codes.min(), codes.max())
    return codes


def _grid(bits):
    return (127, 127) if bits == 8 else (2 ** (bits - 1), 2 ** (bits - 1) - 1)


def expected_int8_kernel(layer, bn_layer=None):
    """`k * codes` of a quantized layer as `(channels, -1)` rows in the
    TFLite weight order of its type, with the sign of `bn_layer`'s scale."""
    codes = kernel_codes(layer)
    qn, qp = _grid(layer.kernel_quantizer.bits)
    values = (127 // max(qn, qp)) * codes
    if bn_layer is not None:
        # Along the output-channel axes (Conv2DTranspose: -2, one step per tensor).
        shape = registry.channel_broadcast_shape(values.shape, registry.kernel_output_axes(layer))
        values = values * np.sign(np.asarray(bn_layer.gamma)).reshape(shape)
    layout = registry.layer_type_of(layer).tflite_weights or _CONV_2D_LAYOUT
    values = layout.layout(values, layer) if layout.layer_layout else layout.layout(values)
    return np.moveaxis(values, layout.axis, 0).reshape(values.shape[layout.axis], -1)


def check_int8_codes(interpreter, qmodel, layer_name, bn_name=None):
    """Asserts the layer's int8 weights in `interpreter` are `k * codes`;
    returns the codes."""
    layer = qmodel.get_layer(layer_name)
    bn_layer = None if bn_name is None else qmodel.get_layer(bn_name)
    np.testing.assert_array_equal(
        tflite_int8_kernel(interpreter, layer_name), expected_int8_kernel(layer, bn_layer)
    )
    return kernel_codes(layer)
