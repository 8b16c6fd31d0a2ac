"""Turns a recipe, bit-widths and per-layer overrides into one QuantizeConfig per layer."""

import re

from kqrobust import quantizers as quantizers_lib
from kqrobust.configs.quantize_config import QuantizeConfig
from kqrobust.configs.recipe import EXCLUDE_TOKENS
from kqrobust.quantizers.base import check_bits
from kqrobust.quantizers.lsq import LSQ
from kqrobust.regularizers import KURE
from kqrobust.regularizers import SymReg
from kqrobust.transforms import SFP
from kqrobust.transforms import SatNL

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


def _excluded(exclude, name, kind, first_conv, last_dense):
    """Whether layer `name` matches an exclusion token or regex."""
    for item in exclude:
        if item == "depthwise" and kind == "depthwise":
            return True
        if item == "first_conv" and name == first_conv:
            return True
        if item == "last_dense" and name == last_dense:
            return True
        if item not in EXCLUDE_TOKENS and re.fullmatch(item, name):
            return True
    return False


def robust_hooks(recipe, layers):
    """The robust-training hooks of each quantizable layer, by layer name.

    Args:
        recipe: a `Recipe`.
        layers: `[(name, kind, output_axes)]` of the quantized layers
            in graph order, `kind` one of "conv", "depthwise", "dense",
            `output_axes` the kernel's output-channel axes (SymReg's
            `channel_axis`; `kq.layers.registry.kernel_output_axes`).

    Returns:
        `{name: {"weight_transform": SatNL or None, "input_perturbation": SFP
        or None, "kernel_losses": [SymReg/KURE]}}`. SatNL goes on every
        layer; SFP on every conv (Conv2D and DepthwiseConv2D) layer; SymReg
        and KURE on the layers their exclusions leave. KURE's `lambda` is
        divided by the number of layers that get it, so the sum of the
        per-layer losses is the paper's mean over layers.
    """
    convs = [name for name, kind, _ in layers if kind in ("conv", "depthwise")]
    first_conv = convs[0] if convs else None
    last_dense = layers[-1][0] if layers and layers[-1][1] == "dense" else None
    kure_layers = [
        name for name, kind, _ in layers
        if not _excluded(recipe.kure_exclude, name, kind, first_conv, last_dense)]
    hooks = {}
    for name, kind, channel_axis in layers:
        losses = []
        if recipe.symreg is not None and not _excluded(
                recipe.symreg_exclude, name, kind, first_conv, last_dense):
            losses.append(SymReg(*recipe.symreg, channel_axis=channel_axis))
        if recipe.kure is not None and name in kure_layers:
            losses.append(KURE(target=recipe.kure_target,
                               weight=recipe.kure / len(kure_layers)))
        hooks[name] = {
            "weight_transform": (
                None if recipe.satnl_alpha is None else SatNL(recipe.satnl_alpha)),
            "input_perturbation": (
                SFP(recipe.sfp_p) if recipe.sfp_p is not None and name in convs else None),
            "kernel_losses": losses,
        }
    return hooks


def plan_layer(recipe, weight_bits, activation_bits, input_nonnegative,
               override, kernel_channel_axis, hooks=None, name=""):
    """The QuantizeConfig of one layer, or None when the layer stays float.

    `hooks` are the layer's entry of `robust_hooks` (None: no hooks).
    """
    if override.get("skip"):
        return None
    hooks = dict(hooks or {})
    if not recipe.fake_quant:
        if hooks.get("input_perturbation") is not None:
            raise ValueError(
                f"Recipe '{recipe.name}' has sfp_p={recipe.sfp_p}, but SFP needs the "
                "LSQ input step of a quantized layer and this recipe builds a float "
                "model (fake_quant=False). Fix: use kq.quantize_model, or set sfp_p=None.")
        return QuantizeConfig(**hooks)
    weight_bits = check_bits(override.get("weight_bits", weight_bits), "weight_bits")
    # Weights: LSQ's full signed grid below 8 bits, TFLite's [-127, 127] at 8
    # bits (narrow range only drops -128; `kq.ops.quant_levels`).
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
    if hooks.get("input_perturbation") is not None and not isinstance(input_quantizer, LSQ):
        raise ValueError(
            f"Recipe '{recipe.name}' adds SFP noise (sfp_p={recipe.sfp_p}) of width the "
            f"LSQ input step, but layer '{name}' has input quantizer "
            f"{type(input_quantizer).__name__ if input_quantizer else None}. Fix: use "
            "activation_quantizer='lsq' for conv layers, or set sfp_p=None.")
    return QuantizeConfig(weight_quantizer=weight_quantizer,
                          input_quantizer=input_quantizer, **hooks)
