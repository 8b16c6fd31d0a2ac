"""Step-size robustness: accuracy with `s = k * s'` (Park et al., ECCV 2022, Fig. 7)."""

import numpy as np

from kqrobust.evaluate.data import accuracy
from kqrobust.evaluate.data import advance
from kqrobust.evaluate.data import as_arrays
from kqrobust.evaluate.data import default_calibration
from kqrobust.evaluate.requantize import requantize
from kqrobust.ptq.steps import TENSORS
from kqrobust.ptq.steps import get_step
from kqrobust.ptq.steps import set_step
from kqrobust.quantized_layers import step_holders

DEFAULT_FACTORS = tuple(np.round(np.linspace(0.9, 1.1, 11), 2).tolist())


def step_size_sweep(
    model,
    data,
    factors=DEFAULT_FACTORS,
    weight_bits=4,
    activation_bits=None,
    method="auto",
    calibration_data=None,
    tensors=("kernel",),
    first_last_bits=8,
    layer_overrides=None,
    batch_size=256,
    progbar=None,
):
    """Accuracy when every step `s'` is replaced by `k * s'`.

    The model is first quantized at `weight_bits` / `activation_bits`
    (`kq.evaluate.requantize`: its trained steps, or a PTQ range rule); then,
    for each factor `k`, the steps of the chosen quantizers of every
    quantized layer (first and last included) are scaled by `k`.

    Args:
        model: a float, robustified or QAT classifier.
        data: `(x, y)` evaluation data.
        factors: the `k` values (Park et al.'s Fig. 7 spans about 0.9 to 1.1).
        weight_bits, activation_bits: the bit-widths `s'` is optimal for.
        method: as `requantize`.
        calibration_data: default: the first 256 evaluation inputs.
        tensors: which steps to scale: ("kernel",) (Fig. 7: the weight
            quantizer), ("input",) or both.
        first_last_bits, layer_overrides: as `kq.ptq.quantize`.
        batch_size: evaluation batch size.
        progbar: a `keras.utils.Progbar` advanced once per factor.

    Returns:
        A list of rows `{"factor", "accuracy"}` in the order of `factors`.

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, Fig. 7 and sec. 5.3.
        See docs/methods.md#robustness-evaluations.
    """
    unknown = set(tensors) - set(TENSORS)
    if unknown or not tensors:
        raise ValueError(
            f"tensors must be a non-empty subset of {list(TENSORS)}. Received: tensors={tensors!r}"
        )
    x, y = as_arrays(data)
    qmodel = requantize(
        model,
        weight_bits,
        activation_bits,
        method,
        default_calibration(calibration_data, x),
        first_last_bits,
        layer_overrides,
    )
    base = [
        (layer, tensor, get_step(layer, tensor))
        for tensor in tensors
        for layer in step_holders(qmodel, tensor)
    ]
    rows = []
    for factor in factors:
        for layer, tensor, step in base:
            set_step(layer, tensor, step * factor)
        rows.append({"factor": float(factor), "accuracy": accuracy(qmodel, x, y, batch_size)})
        advance(progbar)
    return rows
