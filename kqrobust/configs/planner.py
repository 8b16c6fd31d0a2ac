"""Turns a recipe, bit-widths and per-layer overrides into one QuantizeConfig per layer."""

import re

from kqrobust import quantizers as quantizers_lib
from kqrobust.configs.quantize_config import QuantizeConfig
from kqrobust.quantizers.base import check_bits
from kqrobust.techniques import QuantizedLayers

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
                f"{{'weight_bits': 8}}. Received: {override!r}"
            )
        unknown = set(override) - OVERRIDE_KEYS
        if unknown:
            raise ValueError(
                f"layer_overrides['{key}'] has unknown keys {sorted(unknown)}. "
                f"Allowed keys: {sorted(OVERRIDE_KEYS)}"
            )
        if key in resolved:
            matches = [key]
        else:
            try:
                pattern = re.compile(key)
            except re.error as err:
                raise ValueError(
                    f"layer_overrides key '{key}' is neither a layer name nor a "
                    f"valid regex ({err})."
                ) from err
            matches = [n for n in layer_names if pattern.fullmatch(n)]
        if not matches:
            raise ValueError(
                f"layer_overrides key '{key}' matches no quantizable layer. "
                f"Quantizable layers: {list(layer_names)}"
            )
        for name in matches:
            resolved[name].update(override)
    return resolved


def robust_hooks(recipe, layers):
    """The layer hooks of each quantizable layer, by layer name: the recipe's techniques merged.

    Args:
        recipe: a `Recipe`.
        layers: `[(name, kind, output_axes)]` of the quantized layers
            in graph order, `kind` one of "conv", "depthwise", "dense",
            `output_axes` the kernel's output-channel axes (SymReg's
            `channel_axis`; `kq.layers.registry.kernel_output_axes`).

    Returns:
        `{name: {"weight_transform": ..., "input_perturbation": ...,
        "kernel_losses": [...]}}` for every layer: what each technique's
        `layer_hooks` gives (built in: SatNL on every layer, SFP on every
        conv layer, SymReg and KURE on the layers their exclusions leave),
        `kernel_losses` in the recipe's technique order. Two techniques
        setting the same `weight_transform` or `input_perturbation` of a
        layer is a ValueError.
    """
    selection = QuantizedLayers(layers)
    hooks = {
        name: {"weight_transform": None, "input_perturbation": None, "kernel_losses": []}
        for name in selection.names
    }
    setters = {}
    for technique in recipe.techniques:
        for name, contribution in technique.layer_hooks(selection).items():
            for key, value in contribution.items():
                if key not in hooks[name]:
                    raise ValueError(
                        f"{type(technique).__name__}.layer_hooks set hook '{key}' of layer "
                        f"'{name}'; techniques set {sorted(hooks[name])}."
                    )
                if key == "kernel_losses":
                    hooks[name][key].extend(value)
                elif hooks[name][key] is not None:
                    raise ValueError(
                        f"Recipe '{recipe.name}': techniques '{setters[name, key]}' and "
                        f"'{technique.name}' both set the {key} of layer '{name}'; a layer "
                        "has one. Fix: keep one of them in the recipe."
                    )
                else:
                    hooks[name][key] = value
                    setters[name, key] = technique.name
    return hooks


def plan_layer(
    recipe,
    weight_bits,
    activation_bits,
    input_nonnegative,
    override,
    kernel_channel_axis,
    hooks=None,
    name="",
):
    """The QuantizeConfig of one layer, or None when the layer stays float.

    `hooks` are the layer's entry of `robust_hooks` (None: no hooks).
    """
    if override.get("skip"):
        return None
    hooks = dict(hooks or {})
    if not recipe.fake_quant:
        for technique in recipe.techniques:
            technique.check_layer(recipe, name, hooks, None)
        return QuantizeConfig(**hooks)
    weight_bits = check_bits(override.get("weight_bits", weight_bits), "weight_bits")
    # Weights: LSQ's full signed grid below 8 bits, TFLite's [-127, 127] at 8
    # bits (narrow range only drops -128; `kq.ops.quant_levels`).
    weight_quantizer = quantizers_lib.get(
        override.get("weight_quantizer", recipe.weight_quantizer)
    ).replace(
        bits=weight_bits,
        signed=True,
        narrow_range=True,
        channel_axis=kernel_channel_axis,
        per_sample=False,
    )
    input_quantizer = None
    activation_spec = override.get("activation_quantizer", recipe.activation_quantizer)
    if activation_spec is not None:
        activation_bits = check_bits(
            override.get("activation_bits", activation_bits), "activation_bits"
        )
        input_quantizer = quantizers_lib.get(activation_spec).replace(
            bits=activation_bits,
            signed=not input_nonnegative,
            narrow_range=False,
            channel_axis=None,
            per_sample=True,
        )
    for technique in recipe.techniques:
        technique.check_layer(recipe, name, hooks, input_quantizer)
    return QuantizeConfig(
        weight_quantizer=weight_quantizer, input_quantizer=input_quantizer, **hooks
    )
