"""The per-layer quantization summary: what `quantize_model(..., verbose=1)` prints.

One row per layer of a model: quantized at which bit-widths, or float and
why. Read off the model itself, so it describes a loaded model as well as a
freshly quantized one.
"""

import dataclasses

from kqrobust import model_graph
from kqrobust.configs import layer_table
from kqrobust.layers import QuantizeMixin
from kqrobust.layers import registry
from kqrobust.quantized_layers import input_quantizer_holders


@dataclasses.dataclass(frozen=True)
class LayerRow:
    """One layer of the summary.

    Attributes:
        name: the layer name.
        layer_type: its class name.
        quantized: whether it computes with quantized weights or inputs.
        weight_bits: the kernel quantizer's bit-width, or None.
        activation_bits: the input quantizer's bit-width (its own, or the
            `QuantIdentity`'s it reads: a tensor several layers read, or on
            a fixed grid, has one quantizer), or None.
        note: for a float layer, why it is float; for a layer whose input
            a `QuantIdentity` quantizes, which one.
        owns_kernel: a layer with weights other than normalization
            statistics (a registered type, or an unsupported one).
    """

    name: str
    layer_type: str
    quantized: bool
    weight_bits: int = None
    activation_bits: int = None
    note: str = ""
    owns_kernel: bool = False


def _bits(quantizer):
    return None if quantizer is None else getattr(quantizer, "bits", None)


def _float_note(layer):
    if isinstance(layer, QuantizeMixin):
        return "float weights with robust-training hooks (no quantizer)"
    if registry.is_quantizable(layer):
        return "kept float (layer_overrides skip, or a float model)"
    if isinstance(layer, layer_table.FLOAT_LAYERS_WITH_WEIGHTS):
        if type(layer).__name__ == "BatchNormalization":
            return "float; folded into the layer before it at export"
        return "float by design (normalization); int8 in the export"
    if layer_table.is_unsupported_weighted(layer):
        return (
            f"NOT QUANTIZED: {type(layer).__name__} is not a registered layer type "
            "(kq.layers.registry)"
        )
    return "no weights; reads the quantized tensors"


def quantization_summary(model):
    """One `LayerRow` per layer of `model`, in graph order (nested models flattened)."""
    rows = []
    holders = input_quantizer_holders(model)
    for layer in model_graph.flat_layers(model):
        weight_bits = _bits(getattr(layer, "kernel_quantizer", None))
        activation_bits = _bits(getattr(layer, "input_quantizer", None))
        quantized = weight_bits is not None or activation_bits is not None
        note = "" if quantized else _float_note(layer)
        holder = holders.get(layer.name, layer)
        if holder is not layer:
            activation_bits = _bits(holder.input_quantizer)
            note = f"input quantized by '{holder.name}' (one grid for all its readers)"
        owns_kernel = registry.layer_type_of(
            layer
        ) is not None or layer_table.is_unsupported_weighted(layer)
        rows.append(
            LayerRow(
                layer.name,
                type(layer).__name__,
                quantized,
                weight_bits,
                activation_bits,
                note,
                owns_kernel,
            )
        )
    return rows


def format_summary(rows, model_name=""):
    """The rows as a fixed-width text table, with a count of quantized layers."""
    header = ("layer", "type", "weights", "inputs", "note")
    table = [header] + [
        (
            r.name,
            r.layer_type,
            "" if r.weight_bits is None else f"{r.weight_bits}-bit",
            "" if r.activation_bits is None else f"{r.activation_bits}-bit",
            r.note,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths)) + "  " + row[-1]
        for row in table
    ]
    lines.insert(1, "-" * len(lines[0]))
    kernels = [r for r in rows if r.owns_kernel]
    quantized = sum(r.weight_bits is not None for r in kernels)
    title = (
        f"Quantization summary{f' of {model_name!r}' if model_name else ''}: "
        f"{quantized} of {len(kernels)} kernel layers quantized"
    )
    return "\n".join([title] + lines)
