"""Turns a recipe, bit-widths and per-layer overrides into one QuantizeConfig per layer."""

import re

from kqrobust import quantizers as quantizers_lib
from kqrobust.configs.quantize_config import QuantizeConfig
from kqrobust.quantizers.base import check_bits

OVERRIDE_KEYS = frozenset(
    {"weight_bits", "activation_bits", "weight_quantizer", "activation_quantizer", "skip"}
)


def resolve_overrides(layer_overrides, layer_names):
    """Maps each layer name to its merged override dict.

    A key matches a layer by exact name first, else as a regex (`re.fullmatch`).
    Keys are applied in the order given; later keys win.
    """
    resolved = {name: {} for name in layer_names}
    for key, override in (layer_overrides or {}).items():
        if not isinstance(override, dict):
            raise ValueError(
                f"layer_overrides['{key}'] must be a dict such as "
                f"{{'weight_bits': 8}}. Received: {override!r}")
        unknown = set(override) - OVERRIDE_KEYS
        if unknown:
            raise ValueError(
                f"layer_overrides['{key}'] has unknown keys {sorted(unknown)}. "
                f"Allowed keys: {sorted(OVERRIDE_KEYS)}")
        if key in resolved:
            matches = [key]
        else:
            try:
                pattern = re.compile(key)
            except re.error as err:
                raise ValueError(
                    f"layer_overrides key '{key}' is neither a layer name nor a "
                    f"valid regex ({err}).") from err
            matches = [n for n in layer_names if pattern.fullmatch(n)]
        if not matches:
            raise ValueError(
                f"layer_overrides key '{key}' matches no quantizable layer. "
                f"Quantizable layers: {list(layer_names)}")
        for name in matches:
            resolved[name].update(override)
    return resolved


def plan_layer(recipe, spec, weight_bits, activation_bits, input_nonnegative,
               override, kernel_channel_axis):
    """The QuantizeConfig of one layer, or None when the layer stays float."""
    if override.get("skip"):
        return None
    if not recipe.fake_quant:
        return QuantizeConfig()
    weight_bits = check_bits(override.get("weight_bits", weight_bits), "weight_bits")
    weight_quantizer = quantizers_lib.get(
        override.get("weight_quantizer", recipe.weight_quantizer)
    ).replace(bits=weight_bits, signed=True, narrow_range=True,
              channel_axis=kernel_channel_axis, per_sample=False)
    input_quantizer = None
    activation_spec = override.get("activation_quantizer", recipe.activation_quantizer)
    if activation_spec is not None:
        activation_bits = check_bits(
            override.get("activation_bits", activation_bits), "activation_bits")
        input_quantizer = quantizers_lib.get(activation_spec).replace(
            bits=activation_bits, signed=not input_nonnegative,
            narrow_range=False, channel_axis=None, per_sample=True)
    return QuantizeConfig(weight_quantizer=weight_quantizer,
                          input_quantizer=input_quantizer)
