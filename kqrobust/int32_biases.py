"""Biases on the int32 grid of the full-integer file, in the Keras model itself."""

import keras
import numpy as np

from kqrobust.export import graph as export_graph


def round_biases_to_int32(model):
    """Moves every quantized layer's bias to where the int8 file stores it.

    The full-integer file stores the bias of a convolution or fully
    connected op as int32 with the scale `s_in * s_w` of its input and
    weights (Jacob et al., "Quantization and Training of Neural Networks for
    Efficient Integer-Arithmetic-Only Inference", CVPR 2018, sec. 2.4; the
    TFLite int8 specification), a folded BatchNorm's shift included. QAT
    trains the bias in float, so the Keras model and the file differ by that
    rounding: up to `s_in * s_w / 2` per channel, a good part of an output
    step after a BatchNorm with a small variance. Each output it moves across
    a rounding boundary differs by a whole code, and deeper layers amplify
    the difference. This adds the rounding to the bias itself (to the
    BatchNorm's `beta` where one folds into the layer), so that the Keras
    model in inference computes what LiteRT computes. Measured on
    `keras.applications.MobileNetV2` (alpha 0.35, digits, W8A8): argmax
    agreement with LiteRT's default kernels went from 96.1% to 100% of the
    test set (`docs/results/zoo.md`).

    The move is at most half an int32 step and changes no quantized weight;
    a second call moves a bias by float32 rounding at most. `QuantModel.fit`
    calls it after each BatchNorm re-estimation (before validation and when
    training ends); call it yourself after changing weights or statistics
    another way.
    Layers whose input range comes from calibration data at export (not
    from a quantizer) keep their bias.

    Args:
        model: a model built by `kq.quantize_model` (Sequential or
            Functional, with kqrobust layers).

    Returns:
        The names of the layers whose bias (or folded BatchNorm's `beta`)
        moved.

    Example: `kq.round_biases_to_int32(qmodel)`, run in docs/export.md.
    """
    moved = []
    for layer, (batchnorm, shift) in export_graph.int32_bias_shifts(model).items():
        variable = layer.bias if batchnorm is None else batchnorm.beta
        if variable is None:  # BatchNormalization(center=False): no shift to move.
            continue
        value = keras.ops.convert_to_numpy(variable)
        shift = shift.reshape(value.shape)
        # Below the variable's float32 resolution the bias is on its grid already; a
        # non-finite shift (weights that diverged) moves nothing.
        tiny = np.abs(shift) <= np.spacing(np.abs(value))
        shift = np.where(tiny | ~np.isfinite(shift), 0.0, shift)
        if not np.any(shift):
            continue
        variable.assign((value.astype(np.float64) + shift).astype(value.dtype))
        moved.append(layer.name)
    return moved
