"""Empirical bias correction (Nagel et al., ICCV 2019, sec. 4.2).

Layer by layer, in topological order, shift the bias by the mean output
error per output channel on calibration data:

    b <- b - mean_{batch, spatial}( op(Q_in(x_q), Q_w(W)) + b - (op(x_fp, W_fp) + b_fp) )

`x_q` flows through the quantized model whose earlier layers are already
corrected, so the correction also removes the drift they pass on.

References:
    Nagel et al., "Data-Free Quantization Through Weight Equalization and
    Bias Correction", ICCV 2019, sec. 4.2 (empirical bias correction).

Formulas: docs/methods.md#bias-correction.
"""

from kqrobust.ptq.calibration import layer_input
from kqrobust.ptq.calibration import layers_by_name
from kqrobust.ptq.layer_math import batched_mean
from kqrobust.ptq.layer_math import preactivation
from kqrobust.quantized_layers import quantized_layers


def _channel_axis(layer):
    return 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1


def output_bias_error(layer, float_layer, x_q, x_fp, batch_size=128):
    """Mean pre-activation error of `layer` against `float_layer`, per channel."""
    float_bias = float_layer.bias if float_layer.use_bias else None
    bias = layer.bias if layer.use_bias else None

    def error(a, b):
        quantized = preactivation(layer, a, layer.kernel, bias)
        reference = preactivation(layer, b, float_layer.kernel, float_bias, quantize=False)
        return quantized - reference

    return batched_mean(error, (x_q, x_fp), batch_size, axis_keep=_channel_axis(layer))


def correct_biases(qmodel, fmodel, x, batch_size=128):
    """Shifts the bias of every quantized layer with a bias, in place.

    Args:
        qmodel: a PTQ model whose steps are set.
        fmodel: the float model it was built from (same layer names).
        x: calibration inputs, a NumPy array.
        batch_size: batch size.

    Returns:
        `{layer name: the per-channel correction subtracted}` (NumPy).
    """
    float_layers = layers_by_name(fmodel)
    corrections = {}
    for layer in quantized_layers(qmodel):
        if not layer.use_bias:
            continue
        float_layer = float_layers[layer.name]
        x_q = layer_input(qmodel, layer, x, batch_size)
        x_fp = layer_input(fmodel, float_layer, x, batch_size)
        shift = output_bias_error(layer, float_layer, x_q, x_fp, batch_size)
        layer.bias.assign(layer.bias - shift.astype("float32"))
        corrections[layer.name] = shift
    return corrections
