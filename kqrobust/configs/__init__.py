"""Recipes and per-layer QuantizeConfigs (the layer types are in `kq.layers.registry`)."""

from kqrobust.configs.quantize_config import QuantizeConfig
from kqrobust.configs.recipe import PRESETS
from kqrobust.configs.recipe import Recipe
from kqrobust.configs.recipe import get_recipe
from kqrobust.configs.recipe import register_preset

__all__ = [
    "PRESETS",
    "QuantizeConfig",
    "Recipe",
    "get_recipe",
    "register_preset",
]
