"""Robust-training fields of `Recipe`, the presets and the planner's hooks and exclusions."""

import json

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.configs.planner import robust_hooks
from kqrobust.testing import SMALL_CNN_LAYERS

PRESETS = ["lsq", "satnl", "symreg", "kure", "sam", "asam", "robust", "robust+kure", "fpq"]


def test_the_robust_presets_are_registered():
    assert set(PRESETS) <= set(kq.configs.PRESETS)


@pytest.mark.parametrize("name", sorted(kq.configs.PRESETS))
def test_presets_exist_document_and_round_trip(name):
    recipe = kq.configs.get_recipe(name)
    assert recipe.name == name and recipe.description
    assert kq.Recipe.from_config(recipe.get_config()) == recipe
    assert kq.Recipe.from_config(json.loads(json.dumps(recipe.get_config()))) == recipe


@pytest.mark.parametrize("name", sorted(kq.configs.PRESETS))
def test_every_preset_model_keras_round_trip(name, digits, tmp_path):
    """Every registered preset: a QuantModel that saves and loads with its recipe and outputs."""
    (x, _), _ = digits
    qmodel = kq.quantize_model(
        kq.testing.small_cnn(width=4), recipe=name, weight_bits=4, calibration_data=x[:32]
    )
    path = tmp_path / "model.keras"
    qmodel.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert loaded.recipe == kq.configs.get_recipe(name).replace(weight_bits=4)
    np.testing.assert_array_equal(
        loaded.predict(x[:64], verbose=0), qmodel.predict(x[:64], verbose=0)
    )


@pytest.mark.parametrize(
    "name,fields",
    [
        ("satnl", {"satnl_alpha": 1.0}),
        ("symreg", {"symreg": (0.1, 0.1)}),
        ("kure", {"kure": 1.0, "kure_target": 1.8}),
        ("sam", {"sam": "sam", "rho": 0.05}),
        ("asam", {"sam": "asam", "rho": 0.5, "eta": 0.01}),
        ("robust", {"satnl_alpha": 1.0, "symreg": (0.1, 0.1), "sam": "asam", "rho": 1.0}),
        ("robust+kure", {"satnl_alpha": 1.0, "symreg": (0.1, 0.1), "sam": "asam", "kure": 1.0}),
        ("fpq", {"sfp_p": 0.1, "csd_weight": 1.0}),
    ],
)
def test_preset_defaults(name, fields):
    config = kq.configs.get_recipe(name).get_config()
    assert {k: config[k] for k in fields} == fields


def test_rho_defaults_by_method():
    assert kq.Recipe(sam="sam").rho == 0.05
    assert kq.Recipe(sam="asam").rho == 0.5


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"sam": "adam"}, "sam must be None, 'sam' or 'asam'. Received: sam='adam'"),
        (
            {"sam": "sam", "rho": 0},
            r"rho must be a positive number. Received: rho=0.0. Fix: .*0.05",
        ),
        ({"symreg": 0.1}, "symreg must be None or a pair"),
        ({"symreg": (0.1, -1)}, "symreg must be a float >= 0"),
        ({"kure": -1}, "kure must be a float >= 0. Received: kure=-1"),
        ({"satnl_alpha": -2}, "satnl_alpha must be a positive number"),
        ({"sfp_p": 1.5}, r"sfp_p must be in \(0, 1\]. Received: sfp_p=1.5"),
        ({"csd_weight": "1"}, "csd_weight must be a float >= 0"),
        ({"symreg_exclude": "depthwise"}, "symreg_exclude must be a tuple of strings"),
    ],
)
def test_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kq.Recipe(**kwargs)


LAYERS = SMALL_CNN_LAYERS


def losses_by_layer(recipe):
    return {
        name: [type(l).__name__ for l in hooks["kernel_losses"]]
        for name, hooks in robust_hooks(recipe, LAYERS).items()
    }


def test_default_exclusions():
    hooks = robust_hooks(kq.configs.get_recipe("robust+kure"), LAYERS)
    assert {n: [type(l).__name__ for l in h["kernel_losses"]] for n, h in hooks.items()} == {
        "stem": ["SymReg"],
        "dw": ["KURE"],
        "pw": ["SymReg", "KURE"],
        "conv2": ["SymReg", "KURE"],
        "logits": ["KURE"],
    }
    # KURE's lambda is spread over the 4 layers that get it: the paper's mean.
    assert hooks["pw"]["kernel_losses"][1].weight == pytest.approx(0.25)
    assert all(isinstance(h["weight_transform"], kq.transforms.SatNL) for h in hooks.values())


def test_configurable_exclusions():
    recipe = kq.Recipe(
        symreg=(0.1, 0.1),
        symreg_exclude=("pw|conv2",),
        kure=2.0,
        kure_exclude=("last_dense", "depthwise"),
    )
    assert losses_by_layer(recipe) == {
        "stem": ["SymReg", "KURE"],
        "dw": ["SymReg"],
        "pw": ["KURE"],
        "conv2": ["KURE"],
        "logits": ["SymReg"],
    }
    depthwise = robust_hooks(recipe, LAYERS)["dw"]["kernel_losses"][0]
    assert depthwise.channel_axis == (-2, -1)


def test_robustify_rejects_sfp():
    with pytest.raises(ValueError, match="kq.robustify builds a float model.*sfp_p=0.1"):
        kq.robustify(kq.testing.small_cnn(width=4), recipe="fpq")


def test_keywords_of_a_technique_that_is_off_are_kept():
    # Keras' convention: the config round-trips what was passed.
    recipe = kq.Recipe(rho=0.2, kure_exclude=["depthwise"])
    assert recipe.technique("sam") is None and recipe.technique("kure") is None
    assert (recipe.rho, recipe.kure_exclude) == (0.2, ("depthwise",))
    assert recipe.get_config()["rho"] == 0.2
    assert kq.Recipe.from_config(json.loads(json.dumps(recipe.get_config()))) == recipe
    assert recipe.replace(sam="asam").technique("sam").rho == 0.2
    assert recipe != kq.Recipe()
    assert kq.Recipe(rho=None, eta=0.01) == kq.Recipe()  # the defaults: nothing kept
