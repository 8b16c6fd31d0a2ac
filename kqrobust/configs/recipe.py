"""`Recipe`: what `quantize_model` builds and how the model trains.

A recipe is a plain serializable object validated in `__init__`; presets are
recipes registered by name (`kq.configs.get_recipe("lsq")`).
"""

import keras

from kqrobust import quantizers as quantizers_lib
from kqrobust.api_export import kqrobust_export
from kqrobust.quantizers.base import check_bits


@kqrobust_export
class Recipe:
    """A quantization recipe.

    Args:
        name: the recipe's name (a preset's name, or "custom").
        weight_quantizer: quantizer of the weights: a name, dict or instance
            (`kq.quantizers.get`); its bits and axes are set per layer.
        activation_quantizer: quantizer of the layer inputs, or None to keep
            activations float (the paper's "W4/FP").
        weight_bits: default weight bit-width, an int in [2, 8].
        activation_bits: default activation bit-width, an int in [2, 8].
        first_last_bits: bit-width of the first and last quantized layers
            (weights and input), or None to treat them as the others.
        fake_quant: False builds a float model with the robust-training
            hooks only (what `kq.robustify` uses).
        description: one line for docs and `repr`.

    Example:
        >>> recipe = kq.Recipe(weight_bits=3, activation_bits=4)
        >>> qmodel = kq.quantize_model(model, recipe=recipe)
    """

    def __init__(
        self,
        name="custom",
        weight_quantizer="lsq",
        activation_quantizer="lsq",
        weight_bits=4,
        activation_bits=4,
        first_last_bits=8,
        fake_quant=True,
        description="",
    ):
        self.name = str(name)
        self.weight_quantizer = quantizers_lib.serialize(
            quantizers_lib.get(weight_quantizer))
        self.activation_quantizer = (
            None if activation_quantizer is None else quantizers_lib.serialize(
                quantizers_lib.get(activation_quantizer)))
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.activation_bits = check_bits(activation_bits, "activation_bits")
        self.first_last_bits = (
            None if first_last_bits is None
            else check_bits(first_last_bits, "first_last_bits"))
        self.fake_quant = bool(fake_quant)
        self.description = str(description)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return Recipe.from_config({**self.get_config(), **changes})

    def get_config(self):
        return {
            "name": self.name,
            "weight_quantizer": self.weight_quantizer,
            "activation_quantizer": self.activation_quantizer,
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "first_last_bits": self.first_last_bits,
            "fake_quant": self.fake_quant,
            "description": self.description,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Recipe) and self.get_config() == other.get_config()

    def __repr__(self):
        return (f"Recipe(name={self.name!r}, weight_bits={self.weight_bits}, "
                f"activation_bits={self.activation_bits})")


PRESETS = {}


def register_preset(recipe):
    """Registers `recipe` under `recipe.name`; returns it."""
    PRESETS[recipe.name] = recipe
    return recipe


register_preset(Recipe(
    name="lsq",
    description="LSQ learned step sizes for weights and activations "
    "(Esser et al., ICLR 2020).",
))
register_preset(Recipe(
    name="minmax",
    weight_quantizer=quantizers_lib.MinMax(symmetric=True),
    activation_quantizer="ema_minmax",
    description="tfmot-style baseline: per-channel last-value min-max weights, "
    "EMA min-max activations.",
))


def get_recipe(identifier):
    """Returns a `Recipe` from a preset name, a dict or an instance."""
    if isinstance(identifier, Recipe):
        return identifier
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            return keras.saving.deserialize_keras_object(
                identifier, module_objects={"Recipe": Recipe})
        return Recipe.from_config(identifier)
    if isinstance(identifier, str):
        if identifier not in PRESETS:
            raise ValueError(
                f"Unknown recipe: '{identifier}'. Presets: {sorted(PRESETS)}. "
                "Pass one of these names, a dict or a kq.Recipe.")
        return PRESETS[identifier]
    raise ValueError(
        "recipe must be a preset name, a dict or a kq.Recipe. "
        f"Received: recipe={identifier!r}")
