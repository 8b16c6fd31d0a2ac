"""The technique contract (`kq.techniques.Technique`), run on every registered technique.

Each registered name goes through: the registry and serialization, the
keyword form of `kq.Recipe` (or its absence), where it plugs in (the layer
hooks or the train step), and a `.keras` model holding it: one QAT step with
its loss term logged, then a round trip. A technique registered later is
covered with no edit here, as `tests/quantizers/test_contract.py` covers
quantizers and `tests/layers/test_registry.py` layer types.
"""

import json
import os

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.techniques import base as techniques_base
from kqrobust.testing import SMALL_CNN_LAYERS

NAMES = [cls.name for cls in techniques_base.registered()]


def test_the_built_in_techniques_are_registered():
    assert {"satnl", "symreg", "kure", "sam", "sfp", "csd"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_registry_and_serialization(name):
    technique = kq.techniques.get(name)
    assert type(technique) is techniques_base.registered_as(name)
    assert type(technique).name == name
    config = json.loads(json.dumps(kq.techniques.serialize(technique)))
    assert kq.techniques.get(config) == technique
    assert type(technique).from_config(technique.get_config()) == technique


@pytest.mark.parametrize("name", NAMES)
def test_keyword_form(name):
    technique = kq.techniques.get(name)
    cls = type(technique)
    if not cls.fields:  # no keyword form: recipes list it in techniques=[...]
        with pytest.raises(NotImplementedError):
            cls.from_fields()
        return
    fields = technique.to_fields()
    assert list(fields) == list(cls.fields)
    assert cls.from_fields(**fields) == technique
    assert cls.from_fields() is None  # the switch at its default: off
    assert kq.Recipe(**fields).techniques == (technique,)
    assert kq.Recipe(**fields) == kq.Recipe(techniques=[technique])


@pytest.mark.parametrize("name", NAMES)
def test_plugs_into_the_layer_hooks_or_the_train_step(name):
    technique = kq.techniques.get(name)
    hooks = technique.layer_hooks(techniques_base.QuantizedLayers(SMALL_CNN_LAYERS))
    assert set(hooks) <= {layer for layer, _, _ in SMALL_CNN_LAYERS}
    assert all(set(h) <= set(techniques_base.TECHNIQUE_HOOKS) for h in hooks.values())
    hooked = any(any(v is not None and v != [] for v in h.values()) for h in hooks.values())
    assert hooked or technique.adds_loss or technique.computes_gradients
    assert (technique.loss_name is not None) == technique.adds_loss


@pytest.mark.parametrize("name", NAMES)
def test_trains_and_keras_round_trip(name, digits, tmp_path):
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    technique = kq.techniques.get(name)
    float_model = kq.testing.small_cnn(width=4)
    qmodel = kq.quantize_model(
        float_model,
        recipe=kq.Recipe(name=f"only_{name}", techniques=[technique]),
        weight_bits=4,
        activation_bits=4,
        calibration_data=x[:32],
    )
    assert qmodel.recipe.techniques == (technique,)
    qmodel.compile(
        keras.optimizers.SGD(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    history = qmodel.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"]).all(), history
    if technique.adds_loss:
        assert np.isfinite(history[technique.loss_name]).all(), history
    bad = [v.path for v in qmodel.weights if not np.isfinite(v.numpy()).all()]
    assert not bad, bad
    path = os.path.join(tmp_path, "model.keras")
    qmodel.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is kq.training.QuantModel and loaded.recipe == qmodel.recipe
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qmodel.predict(x, verbose=0))
