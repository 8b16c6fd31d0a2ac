"""Techniques as components: the keyword form, composition, registration, the train step."""

import json

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.configs.planner import robust_hooks
from kqrobust.pipeline.optim import default_weight_decay
from kqrobust.techniques import base as techniques_base
from kqrobust.testing import SMALL_CNN_LAYERS
from kqrobust.testing import TestCase

LAYERS = SMALL_CNN_LAYERS


@pytest.fixture
def registry_snapshot():
    """Registrations made by a test are undone after it."""
    saved = dict(techniques_base._REGISTRY), dict(techniques_base._FIELDS)
    yield
    techniques_base._REGISTRY.clear()
    techniques_base._REGISTRY.update(saved[0])
    techniques_base._FIELDS.clear()
    techniques_base._FIELDS.update(saved[1])


def test_keyword_form_is_the_techniques_list():
    by_keyword = kq.Recipe(
        satnl_alpha=0.5, symreg=(0.1, 0.2), kure=1.0, sam="asam", sfp_p=0.2, csd_weight=0.5
    )
    listed = kq.Recipe(
        techniques=[  # any order: keyword-form techniques sort by registration
            kq.techniques.CSDTechnique(0.5),
            kq.techniques.SAMTechnique("asam"),
            kq.techniques.SymRegTechnique(0.1, 0.2),
            kq.techniques.SatNLTechnique(0.5),
            kq.techniques.KURETechnique(1.0),
            kq.techniques.SFPTechnique(0.2),
        ]
    )
    assert listed == by_keyword
    assert [t.name for t in listed.techniques] == ["satnl", "symreg", "kure", "sam", "sfp", "csd"]
    assert listed.get_config() == by_keyword.get_config()
    assert listed.rho == 0.5 and listed.technique("sam").rho == 0.5  # ASAM's default radius
    assert listed.get_config()["techniques"] == []  # all written as keywords


def test_old_saved_config_loads_as_the_preset():
    """A `Recipe.get_config()` written before techniques existed (19 keywords)."""
    old = json.loads(
        '{"name": "robust+kure", "weight_bits": 4, "activation_bits": 4, "first_last_bits": 8,'
        ' "fake_quant": true, "satnl_alpha": 1.0, "symreg": [0.1, 0.1], "symreg_exclude":'
        ' ["depthwise", "last_dense"], "kure": 1.0, "kure_target": 1.8, "kure_exclude":'
        ' ["first_conv"], "sam": "asam", "rho": 1.0, "eta": 0.01, "sfp_p": null,'
        ' "csd_weight": null, "description": "x"}'
    )
    preset = kq.configs.get_recipe("robust+kure")
    loaded = kq.Recipe.from_config(old)
    assert loaded.techniques == preset.techniques
    assert loaded.replace(description=preset.description) == preset


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"satnl": 1.0}, r"unknown arguments \['satnl'\].*keywords \['satnl_alpha'"),
        (
            {"satnl_alpha": 1.0, "techniques": [kq.techniques.SatNLTechnique(2.0)]},
            "technique 'satnl' twice",
        ),
        ({"techniques": kq.techniques.SatNLTechnique()}, "techniques must be a list"),
        ({"techniques": ["nope"]}, r"Unknown technique: 'nope'. Registered: \['csd'"),
        ({"sam": "sam", "rho": -1}, "rho must be a float >= 0. Received: rho=-1"),
        ({"kure_exclude": "first_conv"}, "kure_exclude must be a tuple of strings"),
    ],
)
def test_bad_recipes_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kq.Recipe(**kwargs)


class Hooked(kq.techniques.Technique):
    """Test technique: a weight transform on the Dense layers, an L1 kernel loss on every layer."""

    name = "hooked"

    def __init__(self, l1=0.01):
        self.l1 = l1

    def layer_hooks(self, layers):
        hooks = {name: {"kernel_losses": [keras.regularizers.L1(self.l1)]} for name in layers.names}
        for name, kind, _ in layers.entries:
            if kind == "dense":
                hooks[name]["weight_transform"] = kq.transforms.SatNL(3.0)
        return hooks

    def get_config(self):
        return {"l1": self.l1}


class LogitPenalty(kq.techniques.Technique):
    """Test technique: `weight * mean(y_pred^2)` joins the training loss, logged apart."""

    name = "logit_penalty"
    loss_name = "logit_loss"

    def __init__(self, weight=0.1):
        self.weight = weight

    def loss(self, model, step):
        return self.weight * keras.ops.mean(keras.ops.square(step.y_pred))

    def get_config(self):
        return {"weight": self.weight}


def test_new_techniques_compose_with_the_built_in_ones(registry_snapshot):
    kq.techniques.register_technique(Hooked, package="kqrobust_tests")
    recipe = kq.Recipe(symreg=(0.1, 0.1), techniques=["hooked"])
    hooks = robust_hooks(recipe, LAYERS)
    assert [type(l).__name__ for l in hooks["pw"]["kernel_losses"]] == ["SymReg", "L1"]
    assert (
        hooks["logits"]["weight_transform"].alpha == 3.0 and hooks["pw"]["weight_transform"] is None
    )
    revived = TestCase().run_serialization_test(recipe)
    assert revived.techniques == recipe.techniques and revived.get_config()["techniques"]
    with pytest.raises(
        ValueError,
        match="techniques 'satnl' and 'hooked' both set the weight_transform of layer 'logits'",
    ):
        robust_hooks(recipe.replace(satnl_alpha=1.0), LAYERS)


def test_registration_refuses_clashes(registry_snapshot):
    with pytest.raises(ValueError, match="named 'sam' is registered already"):
        kq.techniques.register_technique(type("Other", (LogitPenalty,), {"name": "sam"}))
    with pytest.raises(ValueError, match="declares the Recipe keyword 'rho', which SAMTechnique"):
        kq.techniques.register_technique(
            type("Radius", (LogitPenalty,), {"name": "radius", "fields": {"rho": None}})
        )
    with pytest.raises(ValueError, match="not a registered technique"):
        kq.Recipe(techniques=[LogitPenalty()])
    with pytest.raises(ValueError, match="2 techniques that compute the step's gradients"):
        twin = type("SAM2", (kq.techniques.SAMTechnique,), {"name": "sam2", "fields": {}})
        kq.techniques.register_technique(twin, package="kqrobust_tests")
        kq.Recipe(sam="sam", techniques=[twin()])


def test_a_train_step_technique_adds_and_logs_its_term(registry_snapshot):
    kq.techniques.register_technique(LogitPenalty, package="kqrobust_tests")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.integers(0, 3, 32)
    inputs = keras.Input((6,))
    model = keras.Model(
        inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inputs))
    )
    qmodel = kq.quantize_model(
        model, recipe=kq.Recipe(techniques=[LogitPenalty(0.1)]), calibration_data=x
    )
    qmodel.compile(
        keras.optimizers.SGD(0.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        run_eagerly=True,
    )  # one step: tracing would cost more than it saves
    logits = np.asarray(qmodel(x, training=True), np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    ce = np.mean(np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(32), y])
    penalty = 0.1 * np.mean(logits**2)
    logs = {
        k: v[0] for k, v in qmodel.fit(x, y, batch_size=32, epochs=1, verbose=0).history.items()
    }
    assert logs["task_loss"] == pytest.approx(ce, rel=1e-4)
    assert logs["logit_loss"] == pytest.approx(penalty, rel=1e-4)
    assert logs["loss"] == pytest.approx(ce + penalty, rel=1e-4)
    assert set(qmodel.evaluate(x, y, verbose=0, return_dict=True)) == {"loss"}


@pytest.mark.parametrize(
    "recipe,bits,expected",
    [
        ("fpq", 4, 5e-4),
        ("lsq", 3, 5e-5),
        ("robust", 2, 2.5e-5),
        (kq.Recipe(csd_weight=1.0), 4, 5e-4),
    ],
)
def test_default_weight_decay_follows_the_techniques(recipe, bits, expected):
    assert default_weight_decay(recipe, bits) == expected
