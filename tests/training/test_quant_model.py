"""QuantModel with every preset: fits on digits, `.keras` round trip with every option on."""

import os
import tempfile

import keras
import numpy as np
import pytest

import kqrobust as kq

PRESETS = ["lsq", "satnl", "symreg", "kure", "sam", "asam", "robust", "robust+kure", "fpq"]
ALL_ON = kq.Recipe(
    name="all_on",
    satnl_alpha=0.5,
    symreg=(0.1, 0.1),
    kure=1.0,
    sam="asam",
    rho=0.5,
    sfp_p=0.2,
    csd_weight=0.5,
)


def fit(qmodel, x, y, epochs=1, count=256):
    qmodel.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return qmodel.fit(x[:count], y[:count], batch_size=64, epochs=epochs, verbose=0)


def assert_finite(qmodel, history):
    assert np.isfinite(history.history["loss"]).all(), history.history["loss"]
    assert all(h > 0 for h in history.history["loss"])
    bad = [v.path for v in qmodel.weights if not np.isfinite(v.numpy()).all()]
    assert not bad, bad


@pytest.fixture(scope="module")
def float_model(digits):
    """The float CNN QAT starts from (as in practice, and as FPQ's teacher)."""
    (x, y), _ = digits
    model = kq.testing.small_cnn(seed=0)
    model.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    model.fit(x, y, batch_size=64, epochs=6, verbose=0)
    return model


@pytest.mark.parametrize(
    "preset",
    [
        pytest.param(
            p, marks=[pytest.mark.slow] + ([pytest.mark.ci] if p in ("robust", "fpq") else [])
        )
        for p in PRESETS
    ],
)
def test_every_preset_fits_on_digits(digits, float_model, preset):
    (x, y), (x_test, y_test) = digits
    qmodel = kq.quantize_model(float_model, recipe=preset, weight_bits=4, activation_bits=4)
    qmodel.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = qmodel.fit(x, y, batch_size=64, epochs=2, verbose=0)
    assert_finite(qmodel, history)
    assert history.history["accuracy"][-1] > 0.5
    assert qmodel.evaluate(x_test, y_test, verbose=0)[1] > 0.5


def test_symreg_and_kure_reach_the_loss(digits):
    (x, _), _ = digits
    qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe="robust+kure")
    assert len(qmodel.losses) == 0
    qmodel(x[:8], training=True)
    # SymReg on stem, pw, conv2; KURE on dw, pw, conv2, logits.
    assert len(qmodel.losses) == 7
    qmodel(x[:8], training=False)
    assert len(qmodel.losses) == 0


def round_trip(qmodel, x):
    path = os.path.join(tempfile.mkdtemp(), "all_on.keras")
    qmodel.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is kq.training.QuantModel and loaded.recipe == qmodel.recipe
    np.testing.assert_array_equal(
        loaded.predict(x[:64], verbose=0), qmodel.predict(x[:64], verbose=0)
    )
    layer = loaded.get_layer("pw")
    assert isinstance(layer.weight_transform, kq.transforms.SatNL)
    assert layer.weight_transform.alpha == 0.5
    assert isinstance(layer.input_perturbation, kq.transforms.SFP)
    assert [type(l) for l in layer.kernel_losses] == [kq.regularizers.SymReg, kq.regularizers.KURE]
    return loaded


def test_keras_round_trip_with_every_option_on(digits):
    (x, _), _ = digits
    qmodel = kq.quantize_model(
        kq.testing.small_cnn(width=4),
        recipe=ALL_ON,
        weight_bits=3,
        activation_bits=4,
        calibration_data=x[:32],
    )
    round_trip(qmodel, x)


@pytest.mark.slow
@pytest.mark.ci
def test_trained_model_with_every_option_round_trips_and_trains_on(digits):
    (x, y), _ = digits
    model = kq.testing.small_cnn(width=4)
    qmodel = kq.quantize_model(model, recipe=ALL_ON, weight_bits=3, activation_bits=4)
    assert_finite(qmodel, fit(qmodel, x, y, count=128))
    loaded = round_trip(qmodel, x)
    loaded.set_teacher(model)  # the teacher is not saved with the model
    assert_finite(loaded, fit(loaded, x, y, count=64))


def test_robustify_gives_a_float_model_that_ptq_quantizes(digits):
    (x, y), (x_test, y_test) = digits
    rmodel = kq.robustify(kq.testing.small_cnn(width=4))
    assert rmodel.recipe.fake_quant is False and rmodel.recipe.sam == "asam"
    for name in ("stem", "dw", "pw", "conv2", "logits"):
        layer = rmodel.get_layer(name)
        assert layer.kernel_quantizer is None and layer.input_quantizer is None
        assert isinstance(layer.weight_transform, kq.transforms.SatNL)
    assert_finite(rmodel, fit(rmodel, x, y, count=128))
    pmodel = kq.ptq.quantize(rmodel, x[:128], method="minmax", weight_bits=4, activation_bits=8)
    assert np.isfinite(pmodel.predict(x_test[:32], verbose=0)).all()
