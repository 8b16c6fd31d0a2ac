"""Bit-width robustness: one trained model at other bit-widths.

Park, Jang & Park, "Symmetry Regularization and Saturating Nonlinearity for
Robust Quantization", ECCV 2022, Fig. 8 and Table 1.
"""

import collections

from kqrobust.evaluate.data import accuracy
from kqrobust.evaluate.data import advance
from kqrobust.evaluate.data import as_arrays
from kqrobust.evaluate.data import default_calibration
from kqrobust.evaluate.requantize import has_trained_steps
from kqrobust.evaluate.requantize import requantize
from kqrobust.evaluate.requantize import resolve_method
from kqrobust.ptq.float_view import float_view
from kqrobust.ptq.steps import quantizer_of
from kqrobust.quantized_layers import step_holders

# `activation_bits="trained"`: a QAT model keeps its own activation quantizers.
TRAINED = "trained"


def trained_bits(model, tensor):
    """The bit-width a QAT model's "kernel" or "input" quantizers were trained at.

    The most common bit-width among its quantizers with a step (the first
    and last layers, usually at 8 bits, are the exceptions; ties go to the
    lower one), or None for a model without trained steps (float,
    robustified) or without such quantizers.
    """
    if not has_trained_steps(model):
        return None
    counts = collections.Counter(
        quantizer_of(layer, tensor)[0].bits for layer in step_holders(model, tensor)
    )
    if not counts:
        return None
    return min(counts, key=lambda bits: (-counts[bits], bits))


def resolve_activation_bits(model, activation_bits):
    """`activation_bits`, or for "trained" the model's own (None: float activations)."""
    return trained_bits(model, "input") if activation_bits == TRAINED else activation_bits


def config_label(weight_bits, activation_bits):
    """Park et al.'s Table 1 labels: "FP", "4/FP", "6/6" (weight/activation bits)."""
    if weight_bits is None:
        return "FP"
    return f"{weight_bits}/{'FP' if activation_bits is None else activation_bits}"


def bit_configs(weight_bits, activation_bits):
    """Pairs `(w, a)`: `activation_bits` None, one int, or a list as long as `weight_bits`."""
    weight_bits = list(weight_bits)
    if activation_bits is None or isinstance(activation_bits, int):
        return [(w, activation_bits) for w in weight_bits]
    activation_bits = list(activation_bits)
    if len(activation_bits) != len(weight_bits):
        raise ValueError(
            "activation_bits must be None, an int, or a list as long as weight_bits "
            f"(entries may be None for float activations). Received: weight_bits="
            f"{weight_bits}, activation_bits={activation_bits}"
        )
    return list(zip(weight_bits, activation_bits))


def bitwidth_sweep(
    model,
    data,
    weight_bits=(8, 6, 5, 4, 3, 2),
    activation_bits=None,
    method="auto",
    calibration_data=None,
    first_last_bits=8,
    layer_overrides=None,
    batch_size=256,
    progbar=None,
):
    """Accuracy of one trained model re-quantized at several bit-widths.

    No fine-tuning: each configuration is a post-training quantization of
    the same weights (`kq.evaluate.requantize`). The first row, "FP", is the
    accuracy with no quantizer at all (the model's effective float weights,
    `kq.ptq.float_view`, and float activations).

    A QAT model is trained with its activation quantizers; run without them
    its accuracy can be far below what it scores as trained.
    `activation_bits="trained"` keeps them: every configuration uses the
    model's own activation bit-width and trained steps ("8/4", "4/4", ...,
    the "4/4" row at 4-bit training being the model as trained), and a model
    without trained steps gets float activations.

    Args:
        model: a float, robustified or QAT (`QuantModel`) classifier.
        data: `(x, y)` evaluation data (or an iterable of batches).
        weight_bits: weight bit-widths.
        activation_bits: None (float activations), one int for all,
            "trained" (see above), or a list paired with `weight_bits`
            (entries may be None), e.g. `weight_bits=[4, 3, 2, 6, 5, 4, 3]`,
            `activation_bits=[None, None, None, 6, 5, 4, 3]` for Park et
            al.'s Table 1 columns.
        method: "auto", "rescale" or a `kq.ptq` method (`requantize`).
        calibration_data: calibration inputs; default: the first 256
            evaluation inputs.
        first_last_bits: bit-width of the first and last layers.
        layer_overrides: per-layer overrides (mixed precision).
        batch_size: evaluation batch size.
        progbar: a `keras.utils.Progbar` advanced once per configuration.

    Returns:
        A list of rows `{"label", "weight_bits", "activation_bits",
        "method", "accuracy"}`, "FP" first.

    Example: `[(r["label"], r["accuracy"]) for r in bitwidth_sweep(qat_model,
    (x_test, y_test))]`, run in docs/ptq_evaluation.md ("Evaluate").

    References:
        Park et al., ECCV 2022, Fig. 8 and Table 1.
    """
    configs = bit_configs(weight_bits, resolve_activation_bits(model, activation_bits))
    x, y = as_arrays(data)
    calibration = default_calibration(calibration_data, x)
    method = resolve_method(model, method)
    rows = [
        {
            "label": "FP",
            "weight_bits": None,
            "activation_bits": None,
            "method": None,
            "accuracy": accuracy(float_view(model), x, y, batch_size),
        }
    ]
    advance(progbar)
    for w_bits, a_bits in configs:
        qmodel = requantize(
            model, w_bits, a_bits, method, calibration, first_last_bits, layer_overrides
        )
        rows.append(
            {
                "label": config_label(w_bits, a_bits),
                "weight_bits": w_bits,
                "activation_bits": a_bits,
                "method": method,
                "accuracy": accuracy(qmodel, x, y, batch_size),
            }
        )
        advance(progbar)
    return rows
