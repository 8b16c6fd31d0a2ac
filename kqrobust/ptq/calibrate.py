"""Writes the steps of a PTQ model's quantizers from a range rule."""

from kqrobust import model_graph
from kqrobust.layers import QuantIdentity
from kqrobust.ptq.calibration import layer_input
from kqrobust.ptq.calibration import layers_by_name
from kqrobust.ptq.ranges import RANGE_RULES
from kqrobust.ptq.ranges import as_columns
from kqrobust.ptq.steps import has_step
from kqrobust.ptq.steps import num_steps
from kqrobust.ptq.steps import quantizer_of
from kqrobust.ptq.steps import set_step
from kqrobust.quantized_layers import quantized_layers
from kqrobust.quantized_layers import step_holders


def _rule_step(rule, layer, tensor, values):
    quantizer, _ = quantizer_of(layer, tensor)
    columns = as_columns(values, num_steps(layer, tensor))
    return RANGE_RULES[rule](columns, quantizer.bits, quantizer.signed, quantizer.narrow_range)


def calibrate_ranges(qmodel, fmodel, x, rule, batch_size=128):
    """Sets every step of `qmodel` by `rule` (a key of `RANGE_RULES`).

    Kernel steps come from each layer's (transformed) kernel, one per
    channel; input steps from the inputs the layer of the same name in the
    float model `fmodel` receives on `x` (activations are calibrated on the
    float model, as ACIQ does); a `QuantIdentity` that quantizes the input
    of several layers (`layer_input`) from the input they receive. Quantizers
    without a step (e.g. a `MinMax` override) keep their own rule.

    Args:
        qmodel: the model built by `kq.quantize_model` from `fmodel`.
        fmodel: the float model.
        x: calibration inputs (may be None when no layer quantizes inputs).
        rule: "minmax", "aciq_laplace", "aciq_gauss" or "mse".
        batch_size: prediction batch size.
    """
    float_layers = layers_by_name(fmodel)
    readers = model_graph.consumers(qmodel)
    for layer in quantized_layers(qmodel):
        if has_step(layer, "kernel"):
            step = _rule_step(rule, layer, "kernel", layer.transformed_kernel())
            set_step(layer, "kernel", step)
        if has_step(layer, "input"):
            if x is None:
                raise ValueError(
                    f"Layer '{layer.name}' quantizes its input, so its range needs "
                    "calibration data. Received: calibration_data=None."
                )
            values = layer_input(fmodel, float_layers[layer.name], x, batch_size)
            set_step(layer, "input", _rule_step(rule, layer, "input", values))
    for identity in step_holders(qmodel, "input"):
        if isinstance(identity, QuantIdentity):
            reader = next(n for n in readers[identity.name] if n in float_layers)
            values = layer_input(fmodel, float_layers[reader], x, batch_size)
            set_step(identity, "input", _rule_step(rule, identity, "input", values))
