"""Recipe validation, presets and serialization; per-layer override resolution."""

import pytest

from kqrobust import configs
from kqrobust import quantizers
from kqrobust.configs.planner import resolve_overrides
from kqrobust.testing import TestCase


class RecipeTest(TestCase):
    def test_presets_resolve_by_name_dict_and_instance(self):
        recipe = configs.get_recipe("lsq")
        self.assertEqual(recipe.name, "lsq")
        self.assertIs(configs.get_recipe(recipe), recipe)
        self.assertEqual(configs.get_recipe(recipe.get_config()), recipe)
        for name in ("lsq", "minmax"):
            self.assertIn(name, configs.PRESETS)

    def test_unknown_recipe_lists_presets(self):
        with self.assertRaisesRegex(ValueError, r"Unknown recipe: 'lsqq'. Presets: \[.*'lsq'.*\]"):
            configs.get_recipe("lsqq")
        with self.assertRaisesRegex(ValueError, "Received: recipe=3"):
            configs.get_recipe(3)

    def test_bits_are_validated(self):
        for field in ("weight_bits", "activation_bits", "first_last_bits"):
            with self.assertRaisesRegex(ValueError, rf"{field} must be an int in \[2, 8\]. Received: {field}=1"):
                configs.Recipe(**{field: 1})

    def test_serialization_round_trip(self):
        recipe = configs.Recipe(name="mine", weight_quantizer=quantizers.LSQ(bits=3),
                                activation_quantizer=None, weight_bits=3, first_last_bits=None)
        revived = self.run_serialization_test(recipe)
        self.assertEqual(revived, recipe)
        self.assertIsNone(revived.activation_quantizer)

    def test_replace_validates(self):
        recipe = configs.get_recipe("lsq").replace(weight_bits=2)
        self.assertEqual(recipe.weight_bits, 2)
        with self.assertRaises(ValueError):
            recipe.replace(weight_bits=12)


def test_overrides_by_name_then_regex_later_keys_win():
    names = ["stem", "block1_dw", "block2_dw", "logits"]
    resolved = resolve_overrides(
        {"block.*_dw": {"weight_bits": 8}, "block2_dw": {"weight_bits": 6}, "logits": {"skip": True}}, names)
    assert resolved["block1_dw"] == {"weight_bits": 8}
    assert resolved["block2_dw"] == {"weight_bits": 6}
    assert resolved["logits"] == {"skip": True}
    assert resolved["stem"] == {}


@pytest.mark.parametrize("overrides,message", [
    ({"nope": {"weight_bits": 8}}, "matches no quantizable layer. Quantizable layers: \\['stem'"),
    ({"stem": {"bits": 8}}, "unknown keys \\['bits'\\]"),
    ({"stem": 8}, "must be a dict"),
    ({"(": {"skip": True}}, "neither a layer name nor a valid regex"),
])
def test_bad_overrides_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_overrides(overrides, ["stem", "logits"])
