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
            with self.assertRaisesRegex(
                ValueError, rf"{field} must be an int in \[2, 8\]. Received: {field}=1"
            ):
                configs.Recipe(**{field: 1})

    def test_serialization_round_trip(self):
        recipe = configs.Recipe(
            name="mine",
            weight_quantizer=quantizers.LSQ(bits=3),
            activation_quantizer=None,
            weight_bits=3,
            first_last_bits=None,
        )
        revived = self.run_serialization_test(recipe)
        self.assertEqual(revived, recipe)
        self.assertIsNone(revived.activation_quantizer)

    def test_weight_grids_follow_the_bit_width_and_survive_saving(self):
        """Planned weight quantizers: LSQ's full grid below 8 bits (2 bits: 4
        levels {-2, -1, 0, 1}, not ternary), TFLite's [-127, 127] at 8 bits
        (the first and last layers); the grid survives a .keras round trip."""
        import numpy as np

        import kqrobust as kq
        from kqrobust.testing import small_cnn

        x = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
        qmodel = kq.quantize_model(
            small_cnn(), weight_bits=2, activation_bits=8, calibration_data=x
        )
        expected = {
            "stem": (127, 127),
            "dw": (2, 1),
            "pw": (2, 1),
            "conv2": (2, 1),
            "logits": (127, 127),
        }
        levels = {n: qmodel.get_layer(n).kernel_quantizer.levels for n in expected}
        self.assertEqual(levels, expected)
        loaded = self.run_model_saving_test(qmodel, x)
        self.assertEqual(
            {n: loaded.get_layer(n).kernel_quantizer.levels for n in expected}, expected
        )
        kernel = np.asarray(loaded.get_layer("pw").quantized_kernel())
        step = np.asarray(loaded.get_layer("pw").kernel_quantizer_weights["step"])
        self.assertTrue(set(np.unique(np.round(kernel / step))) <= {-2, -1, 0, 1})

    def test_replace_validates(self):
        recipe = configs.get_recipe("lsq").replace(weight_bits=2)
        self.assertEqual(recipe.weight_bits, 2)
        with self.assertRaises(ValueError):
            recipe.replace(weight_bits=12)


def test_overrides_by_name_then_regex_later_keys_win():
    names = ["stem", "block1_dw", "block2_dw", "logits"]
    resolved = resolve_overrides(
        {
            "block.*_dw": {"weight_bits": 8},
            "block2_dw": {"weight_bits": 6},
            "logits": {"skip": True},
        },
        names,
    )
    assert resolved["block1_dw"] == {"weight_bits": 8}
    assert resolved["block2_dw"] == {"weight_bits": 6}
    assert resolved["logits"] == {"skip": True}
    assert resolved["stem"] == {}


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            {"nope": {"weight_bits": 8}},
            "matches no quantizable layer. Quantizable layers: \\['stem'",
        ),
        ({"stem": {"bits": 8}}, "unknown keys \\['bits'\\]"),
        ({"stem": 8}, "must be a dict"),
        ({"(": {"skip": True}}, "neither a layer name nor a valid regex"),
    ],
)
def test_bad_overrides_raise(overrides, message):
    with pytest.raises(ValueError, match=message):
        resolve_overrides(overrides, ["stem", "logits"])


def test_register_preset_refuses_a_taken_name_unless_overriding():
    original = configs.get_recipe("lsq")
    with pytest.raises(ValueError, match="preset named 'lsq' is already registered.*override=True"):
        configs.register_preset(configs.Recipe(name="lsq", weight_bits=3))
    assert configs.get_recipe("lsq") is original
    replacement = configs.Recipe(name="lsq", weight_bits=3)
    try:
        assert configs.register_preset(replacement, override=True) is replacement
        assert configs.get_recipe("lsq") is replacement
    finally:
        configs.register_preset(original, override=True)
    assert configs.get_recipe("lsq") is original
