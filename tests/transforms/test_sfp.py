"""SFP noise statistics (docs/methods.md#sfp): zero mean, bounds, probability p, training only."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.testing import TestCase
from kqrobust.testing import run_script_report

STEP = 0.2


def draws(sfp, count, shape=(64,)):
    x = tf.zeros(shape)
    call = tf.function(lambda: sfp(x, tf.constant(STEP)))
    return np.stack([call().numpy() for _ in range(count)])


@pytest.mark.parametrize("p", [0.1, 0.5, 1.0])
def test_noise_statistics(p):
    noise = draws(kq.transforms.SFP(p, seed=1), 600)
    perturbed = np.any(noise != 0, axis=1)
    rate = perturbed.mean()
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / 600) + 1e-9
    values = noise[perturbed]
    assert np.all(np.abs(values) <= STEP / 2)
    assert abs(values.mean()) < 4 * (STEP / np.sqrt(12)) / np.sqrt(values.size)
    assert values.var() == pytest.approx(STEP**2 / 12, rel=0.05)
    assert np.all(noise[~perturbed] == 0)


def test_each_layer_draws_independently():
    first = np.any(draws(kq.transforms.SFP(0.5, seed=2), 800) != 0, axis=1)
    second = np.any(draws(kq.transforms.SFP(0.5, seed=3), 800) != 0, axis=1)
    both = np.mean(first & second)
    assert abs(both - 0.25) < 4 * np.sqrt(0.25 * 0.75 / 800)


def test_step_gradient_is_stopped():
    step = tf.Variable(STEP)
    x = tf.Variable(tf.zeros((8,)))
    with tf.GradientTape(persistent=True) as tape:
        y = tf.reduce_sum(kq.transforms.SFP(1.0, seed=0)(x, step))
    assert tape.gradient(y, step) is None
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), np.ones(8))


def test_fpq_layers_perturb_in_training_only(digits):
    (x, _), _ = digits
    qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe=kq.Recipe(sfp_p=1.0))
    convs = [
        l.name
        for l in qmodel.layers
        if isinstance(getattr(l, "input_perturbation", None), kq.transforms.SFP)
    ]
    assert convs == ["stem", "dw", "pw", "conv2"]  # conv layers only, not the Dense head
    layer = qmodel.get_layer("pw")
    inputs = tf.constant(np.abs(np.random.default_rng(0).normal(size=(4, 4, 4, 4))), tf.float32)
    layer(inputs, training=True)  # initialises the input step
    clean = layer.quantize_input(inputs, training=False).numpy()
    noisy = layer.quantize_input(inputs, training=True).numpy()
    step = float(layer.input_step().numpy())
    assert np.all(np.abs(noisy - clean) <= step / 2 + 1e-6) and np.any(noisy != clean)
    np.testing.assert_array_equal(
        layer(inputs, training=False).numpy(), layer(inputs, training=False).numpy()
    )


def test_sfp_needs_an_lsq_input_quantizer():
    with pytest.raises(ValueError, match="SFP noise.*Fix: use activation_quantizer='lsq'"):
        kq.quantize_model(
            kq.testing.small_cnn(width=4), recipe=kq.Recipe(sfp_p=0.1, activation_quantizer=None)
        )
    with pytest.raises(
        ValueError, match=r"sfp_p must be in \(0, 1\]. Received: sfp_p=0. Fix: .*best 0.1"
    ):
        kq.transforms.SFP(0)


def test_serialization():
    TestCase().run_serialization_test(kq.transforms.SFP(0.3, seed=4))


def sfp_layers(model):
    return [
        layer
        for layer in model.layers
        if isinstance(getattr(layer, "input_perturbation", None), kq.transforms.SFP)
    ]


def test_noise_state_is_saved_and_restored_with_the_model(digits, tmp_path):
    """The generator's state is a layer variable: `.keras` and weights files restore it."""
    (x, y), _ = digits
    qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe=kq.Recipe(sfp_p=1.0))
    qmodel.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    layers = sfp_layers(qmodel)
    assert len(layers) == 4
    for layer in layers:
        state = layer.input_perturbation.seed_generator.state
        assert any(v is state for v in layer.non_trainable_variables)
        assert int(state.numpy()[1]) == 2  # two training steps, one draw each
    qmodel.save(tmp_path / "sfp.keras")
    qmodel.save_weights(tmp_path / "sfp.weights.h5")  # what BackupAndRestore writes
    loaded = keras.models.load_model(tmp_path / "sfp.keras")
    fresh = kq.quantize_model(kq.testing.small_cnn(width=4), recipe=kq.Recipe(sfp_p=1.0))
    fresh.load_weights(tmp_path / "sfp.weights.h5")
    inputs = tf.constant(np.abs(np.random.default_rng(0).normal(size=(2, 4, 4, 4))), tf.float32)
    for restored in (loaded, fresh):
        for layer in layers:
            twin = restored.get_layer(layer.name)
            np.testing.assert_array_equal(
                twin.input_perturbation.seed_generator.state.numpy(),
                layer.input_perturbation.seed_generator.state.numpy(),
            )
        pw = restored.get_layer("pw")
        np.testing.assert_array_equal(  # the same next noise
            pw.input_perturbation(inputs, tf.constant(STEP)).numpy(),
            qmodel.get_layer("pw").input_perturbation(inputs, tf.constant(STEP)).numpy(),
        )
        qmodel.get_layer("pw").input_perturbation.seed_generator.state.assign_sub([0, 1])


def test_replicas_draw_different_noise():
    """Two replicas of a MirroredStrategy (two logical CPUs, in a subprocess)."""
    script = pathlib.Path(__file__).with_name("sfp_mirrored.py")
    report = run_script_report(script, timeout=300)
    assert report["replicas"] == 2
    assert report["replicas_differ"] and report["steps_differ"]
    assert report["states_in_sync"] and report["state"] == [7, 2]


def test_sfp_noise_needs_a_generator():
    with pytest.raises(
        ValueError, match="Received: seed=3. Fix: pass a keras.random.SeedGenerator"
    ):
        kq.transforms.sfp_noise(tf.zeros(3), 0.1, 0.5, 3)
