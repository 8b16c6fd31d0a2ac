"""Recipes, per-layer QuantizeConfigs and the table of supported layers."""

from kqrobust.configs.layer_table import QUANTIZABLE_LAYERS
from kqrobust.configs.layer_table import LayerSpec
from kqrobust.configs.quantize_config import QuantizeConfig
from kqrobust.configs.recipe import PRESETS
from kqrobust.configs.recipe import Recipe
from kqrobust.configs.recipe import get_recipe
from kqrobust.configs.recipe import register_preset

__all__ = [
    "LayerSpec",
    "PRESETS",
    "QUANTIZABLE_LAYERS",
    "QuantizeConfig",
    "Recipe",
    "get_recipe",
    "register_preset",
]
