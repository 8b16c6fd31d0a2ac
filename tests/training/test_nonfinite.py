"""Non-finite training inputs: QuantModel.fit stops (or skips) before any variable changes;
predict never writes."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.testing import small_cnn


def _qmodel(recipe="lsq"):
    qmodel = kq.quantize_model(small_cnn(), recipe=recipe, weight_bits=4, activation_bits=4)
    qmodel.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return qmodel


def _poisoned(digits, value=np.nan, sample=70):
    (x, y), _ = digits
    x = x[:256].copy()
    x[sample, 1, 2, 0] = value
    return x, y[:256]


def _state(model):
    return [v.numpy().copy() for v in model.variables]


def _same(before, model):
    return all(np.array_equal(a, v.numpy()) for a, v in zip(before, model.variables))


class Snapshot(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        self.state = _state(self.model)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_array_with_non_finite_inputs_is_refused_before_training(digits, value):
    x, y = _poisoned(digits, value)
    qmodel = _qmodel()
    before = _state(qmodel)
    with pytest.raises(ValueError, match=r"x holds a non-finite value .* at sample 70"):
        qmodel.fit(x, y, batch_size=32, verbose=0)
    assert _same(before, qmodel)


@pytest.mark.parametrize("recipe", ["lsq", "sam"])
def test_dataset_batch_with_nan_stops_the_step_before_any_change(digits, recipe):
    x, y = _poisoned(digits)
    qmodel = _qmodel(recipe)
    snapshot = Snapshot()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    with pytest.raises(
        ValueError,
        match=r"NaN or Inf at epoch 0, batch 2, sample 6 within the "
        r"batch.*nonfinite_batches = 'skip'",
    ):
        qmodel.fit(dataset, verbose=0, callbacks=[snapshot])
    assert _same(snapshot.state, qmodel)  # as after batch 1: batch 2 wrote nothing


def test_nan_in_the_first_batch_sets_no_step(digits):
    x, y = _poisoned(digits, sample=3)
    qmodel = _qmodel()
    before = _state(qmodel)
    with pytest.raises(ValueError, match=r"at batch 0, sample 3 within the batch"):
        qmodel.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), verbose=0)
    assert _same(before, qmodel)


def test_skip_refuses_bad_batches_and_trains_on(digits):
    x, y = _poisoned(digits)
    qmodel = _qmodel()
    qmodel.batchnorm_samples = 0  # the re-estimation after fit refuses NaN data
    qmodel.fit(x[:64], y[:64], verbose=0)  # a first trace with "raise"
    qmodel.nonfinite_batches = "skip"
    steps = int(qmodel.optimizer.iterations)
    history = qmodel.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(32), verbose=0)
    assert int(qmodel.optimizer.iterations) == steps + 7  # 8 batches, one skipped
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(v.numpy()).all() for v in qmodel.variables)


def test_bad_mode():
    with pytest.raises(
        ValueError,
        match=r"nonfinite_batches must be one of \['raise', 'skip'\]. "
        r"Received: nonfinite_batches='ignore'",
    ):
        _qmodel().nonfinite_batches = "ignore"


def test_predict_never_writes(digits):
    (x, y), _ = digits
    bad = x[:32].copy()
    bad[0] = np.nan
    qmodel = _qmodel()
    before = _state(qmodel)
    with pytest.raises(ValueError, match="never saw data"):
        qmodel.predict(bad, verbose=0)  # steps are set by training or calibration only
    assert _same(before, qmodel)
    qmodel.fit(x[:64], y[:64], verbose=0)
    before = _state(qmodel)
    qmodel.predict(bad, verbose=0)
    assert _same(before, qmodel)
    assert all(np.isfinite(v.numpy()).all() for v in qmodel.variables)
