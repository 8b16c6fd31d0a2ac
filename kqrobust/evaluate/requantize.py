"""One trained model at another bit-width, without fine-tuning."""

from kqrobust import model_graph
from kqrobust.layers import QuantIdentity
from kqrobust.layers import QuantizeMixin
from kqrobust.ptq import quantize as ptq_quantize
from kqrobust.ptq.calibration import layers_by_name
from kqrobust.ptq.quantize import get_method
from kqrobust.ptq.steps import TENSORS
from kqrobust.ptq.steps import get_step
from kqrobust.ptq.steps import has_step
from kqrobust.ptq.steps import quantizer_of
from kqrobust.ptq.steps import set_step
from kqrobust.quantized_layers import quantized_layers

DEFAULT_FLOAT_METHOD = "aciq_laplace"


def _trained_step(layer, tensor):
    """The trained quantizer of `layer` for `tensor` if its step is set, else None."""
    if not isinstance(layer, (QuantizeMixin, QuantIdentity)) or not has_step(layer, tensor):
        return None
    quantizer, weights = quantizer_of(layer, tensor)
    return quantizer if quantizer.is_initialized(weights) else None


def has_trained_steps(model):
    """True when some layer of `model` carries an initialised kernel step."""
    return any(
        _trained_step(layer, "kernel") is not None for layer in layers_by_name(model).values()
    )


def resolve_method(model, method):
    """`"auto"`: "rescale" for a model with trained steps, else ACIQ Laplace."""
    if method == "auto":
        return "rescale" if has_trained_steps(model) else DEFAULT_FLOAT_METHOD
    if method == "rescale":
        return method
    try:
        return get_method(method)
    except ValueError as err:
        raise ValueError(f"{err} Also accepted here: 'auto', 'rescale'.") from None


def _level_count(quantizer):
    """`L = Qn + Qp + 1`, the number of levels of the quantizer's grid."""
    qn, qp = quantizer.levels
    return qn + qp + 1


def rescale_steps(trained, qmodel):
    """Copies `trained`'s steps into `qmodel`, rescaled to its bit-widths.

    A step `s` learned for a grid of `L` levels becomes `s * L / L'` on a
    grid of `L'` levels: the clipping threshold the training found, `alpha =
    L * s / 2` (signed; `L * s` unsigned), is kept and the new levels are
    spread over it with ACIQ's step (`kq.ptq.ranges.aciq_step`; Banner et
    al., NeurIPS 2019: `2^M` levels over `[-alpha, alpha]`). On LSQ's signed
    grids this keeps the negative end `-Qn * s` (4 to 2 bits: `s' = 4 * s`,
    `[-8s, 7s]` becomes `[-8s, 4s]`). Quantizers of `qmodel` with no trained
    counterpart (or a different signedness) keep their step. `QuantIdentity`
    steps (`kq.tensor_coverage`) follow the same rule: the 8-bit ones keep
    theirs, and one that quantizes the input of several layers at the
    activation bit-width is rescaled as their input quantizer would be.
    """
    sources = layers_by_name(trained)
    identities = [l for l in model_graph.flat_layers(qmodel) if isinstance(l, QuantIdentity)]
    for layer in quantized_layers(qmodel) + identities:
        for tensor in TENSORS if isinstance(layer, QuantizeMixin) else ("input",):
            source = sources.get(layer.name)
            old = None if source is None else _trained_step(source, tensor)
            new = quantizer_of(layer, tensor)[0] if has_step(layer, tensor) else None
            if old is None or new is None or old.signed != new.signed:
                continue
            set_step(
                layer, tensor, get_step(source, tensor) * _level_count(old) / _level_count(new)
            )


def requantize(
    model,
    weight_bits,
    activation_bits=None,
    method="auto",
    calibration_data=None,
    first_last_bits=8,
    layer_overrides=None,
):
    """Quantizes a trained model at the given bit-widths without fine-tuning.

    Args:
        model: a float model, a robustified one, or a `QuantModel` with
            trained steps (QAT).
        weight_bits: int in [2, 8].
        activation_bits: int in [2, 8] or None (float activations).
        method: a `kq.ptq` method, "rescale" (keep the trained clipping
            ranges, see `rescale_steps`; quantizers without a trained step
            use min-max), or "auto" ("rescale" for a model with trained
            steps, else "aciq_laplace").
        calibration_data: inputs for activation ranges and data-driven
            methods.
        first_last_bits: as `kq.ptq.quantize`.
        layer_overrides: as `kq.ptq.quantize`.

    Returns:
        A `QuantModel` with `FixedRange` quantizers.
    """
    method = resolve_method(model, method)
    qmodel = ptq_quantize(
        model,
        calibration_data,
        method="minmax" if method == "rescale" else method,
        weight_bits=weight_bits,
        activation_bits=activation_bits,
        layer_overrides=layer_overrides,
        first_last_bits=first_last_bits,
    )
    if method == "rescale":
        rescale_steps(model, qmodel)
    return qmodel
