"""Single-level sensitivity: quantize only the weights on one level (Park et al., Fig. 4)."""

import numpy as np

from kqrobust.evaluate.data import accuracy
from kqrobust.evaluate.data import advance
from kqrobust.evaluate.data import as_arrays
from kqrobust.evaluate.data import default_calibration
from kqrobust.evaluate.requantize import requantize
from kqrobust.ptq.calibration import layers_by_name
from kqrobust.ptq.float_view import float_view
from kqrobust.ptq.steps import get_step
from kqrobust.ptq.steps import has_step
from kqrobust.quantized_layers import quantized_layers


def level_sensitivity(
    model,
    data,
    weight_bits=4,
    method="auto",
    calibration_data=None,
    first_last_bits=8,
    layer_overrides=None,
    batch_size=256,
    progbar=None,
):
    """Accuracy when only the weights falling on one grid level are quantized.

    The steps come from quantizing the model at `weight_bits` (float
    activations; `kq.evaluate.requantize`). For each integer level `q` of
    the grid, every weight `w` of the layers at `weight_bits` whose code
    `round(clip(w / s, -Qn, Qp))` equals `q` is replaced by `q * s`; all
    other weights, and the layers at other bit-widths (the first and last,
    at `first_last_bits`), stay float.

    Args:
        model: a float, robustified or QAT classifier.
        data: `(x, y)` evaluation data.
        weight_bits: the grid's bit-width.
        method, calibration_data, first_last_bits, layer_overrides: as
            `kq.evaluate.requantize`.
        batch_size: evaluation batch size.
        progbar: a `keras.utils.Progbar` advanced once per level.

    Returns:
        `{"weight_bits", "float_accuracy", "levels": [{"level", "fraction",
        "accuracy"}]}`, where `fraction` is the share of the weights on that
        level.

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, Fig. 4 and sec. 3.3.
        See docs/methods.md#robustness-evaluations.
    """
    x, y = as_arrays(data)
    qmodel = requantize(
        model,
        weight_bits,
        None,
        method,
        default_calibration(calibration_data, x),
        first_last_bits,
        layer_overrides,
    )
    fmodel = float_view(model)  # a private copy whose kernels this function edits
    float_layers = layers_by_name(fmodel)
    targets = []
    levels = None
    for layer in quantized_layers(qmodel):
        if not has_step(layer, "kernel") or layer.kernel_quantizer.bits != weight_bits:
            continue
        qn, qp = levels = layer.kernel_quantizer.levels
        step = get_step(layer, "kernel")
        kernel = np.asarray(float_layers[layer.name].kernel)
        codes = np.round(np.clip(kernel / step, -qn, qp))
        targets.append((float_layers[layer.name], kernel, codes, step))
    if not targets:
        raise ValueError(
            f"No layer has its weights at weight_bits={weight_bits} (the first and "
            f"last layers use first_last_bits={first_last_bits}). Fix: pass "
            "first_last_bits=None or a model with more quantizable layers."
        )
    total = sum(codes.size for _, _, codes, _ in targets)
    result = {
        "weight_bits": weight_bits,
        "float_accuracy": accuracy(fmodel, x, y, batch_size),
        "levels": [],
    }
    for level in range(-levels[0], levels[1] + 1):
        count = 0
        for float_layer, kernel, codes, step in targets:
            on_level = codes == level
            float_layer.kernel.assign(np.where(on_level, level * step, kernel).astype("float32"))
            count += int(on_level.sum())
        result["levels"].append(
            {
                "level": level,
                "fraction": count / total,
                "accuracy": accuracy(fmodel, x, y, batch_size),
            }
        )
        advance(progbar)
    return result
