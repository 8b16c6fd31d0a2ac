"""A QAT run killed mid-epoch resumes from its last backup, and NaN stops with a named culprit."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from kqrobust import quantize_model
from kqrobust.callbacks.terminate_on_nan import TerminateOnNaN
from kqrobust.pipeline import JobConfig
from kqrobust.pipeline.data import load_job_data
from kqrobust.pipeline.job import train_qat
from kqrobust.testing import small_cnn


class Interrupt(keras.callbacks.Callback):
    """Records the weights after every batch and dies at (epoch, batch)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0
        self.snapshots = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.snapshots.append(((self.epoch, batch), [w.numpy().copy() for w in self.model.weights]))
        if (self.epoch, batch) == self.at:
            raise RuntimeError("simulated preemption")


class RecordStart(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = [w.numpy().copy() for w in self.model.weights]


def test_killed_run_resumes_mid_epoch_state(tmp_path):
    config = JobConfig(out_dir=str(tmp_path), qat_epochs=3, backup_every=4, batch_size=128)
    data = load_job_data("digits", 128)
    float_model = small_cnn()
    strategy = tf.distribute.get_strategy()
    interrupt = Interrupt(epoch=1, batch=9)
    with pytest.raises(RuntimeError, match="simulated preemption"):
        train_qat(config, data, strategy, float_model, extra_callbacks=[interrupt])
    start = RecordStart()
    resumed = train_qat(config, data, strategy, float_model, extra_callbacks=[start])
    # Epoch 0 finished before the kill: only epochs 1 and 2 run again.
    assert len(resumed.history.history["loss"]) == 2
    # The restored state is a mid-epoch snapshot of the killed run (epoch 1).
    matches = [
        at
        for at, weights in interrupt.snapshots
        if all(np.array_equal(a, b) for a, b in zip(weights, start.weights))
    ]
    assert matches and matches[-1][0] == 1 and 0 <= matches[-1][1] < 9, matches


def test_terminate_on_nan_names_the_quantizer_step(digits):
    (x, y), _ = digits
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    qmodel = quantize_model(model, weight_bits=4, activation_bits=4)
    qmodel.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                step = next(v for v in self.model.weights if v.name == "kernel_step")
                step.assign(np.full(step.shape, np.nan, "float32"))

    guard = TerminateOnNaN(check_every=1)
    history = qmodel.fit(x, y, batch_size=64, epochs=2, callbacks=[Poison(), guard], verbose=0)
    assert qmodel.stop_training
    assert "non-finite quantizer steps" in guard.message and "kernel_step" in guard.message
    assert len(history.history["loss"]) == 1


@pytest.mark.parametrize("name", ["kernel", "kernel_step", "moving_mean"])
def test_terminate_on_nan_default_catches_non_finite_variables(name):
    """The loss stays finite (the poisoned layer's output is not used by it), the variable
    is not: the default callback stops training all the same."""
    inputs = keras.Input((4,))
    used = keras.layers.Dense(3, name="used")(inputs)  # an auto name could be "dense" too
    unused = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(3, name="dense")(inputs))
    model = keras.Model(inputs, [used, unused])
    qmodel = quantize_model(model, weight_bits=4, activation_bits=4)
    qmodel.compile("sgd", ["mse", None])
    qmodel.batchnorm_samples = 0  # re-estimating from NaN weights would raise
    x, y = np.ones((64, 4), "float32"), np.zeros((64, 3), "float32")
    layer = qmodel.get_layer("bn" if name == "moving_mean" else "dense")

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                variable = next(v for v in layer.weights if v.name == name)
                variable.assign(np.full(variable.shape, np.nan, "float32"))

    guard = TerminateOnNaN()
    history = qmodel.fit(x, [y, y], batch_size=16, epochs=2, callbacks=[Poison(), guard], verbose=0)
    assert qmodel.stop_training and len(history.history["loss"]) == 1
    assert np.isfinite(history.history["loss"]).all()
    assert "batch 1" in guard.message and f"/{name}" in guard.message


def test_terminate_on_nan_validates():
    with pytest.raises(
        ValueError, match="check_every must be an int >= 0. Received: check_every=-1"
    ):
        TerminateOnNaN(check_every=-1)
