"""HessianTraceLogger and GradientNormLogger in `fit`: History, TensorBoard, no side effects."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust import callbacks
from kqrobust import probes

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=LOSS)
    return model


def _tensorboard_tags(log_dir):
    tags = set()
    for path in glob.glob(os.path.join(log_dir, "**", "*tfevents*"), recursive=True):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags |= {value.tag for value in event.summary.value}
    return tags


class LogsRecorder(keras.callbacks.Callback):
    """Records the epoch logs a later callback (TensorBoard's place) receives."""

    def __init__(self):
        super().__init__()
        self.keys = []

    def on_epoch_end(self, epoch, logs=None):
        self.keys.append(set(logs))


def test_loggers_fill_history_and_later_callbacks(digits):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    probe_data = (x[:128], y[:128])
    model = _model()
    trace_logger = callbacks.HessianTraceLogger(
        probe_data, every_n_epochs=2, max_probes=4, min_probes=4, seed=0
    )
    norm_logger = callbacks.GradientNormLogger(probe_data)
    recorder = LogsRecorder()
    history = model.fit(
        x, y, epochs=4, batch_size=64, verbose=0, callbacks=[trace_logger, norm_logger, recorder]
    )
    assert len(history.history["grad_norm"]) == 4
    assert len(history.history["hessian_trace"]) == 2
    assert len(history.history["hessian_trace_std_error"]) == 2
    assert trace_logger.epochs == [1, 3] and norm_logger.epochs == [0, 1, 2, 3]
    # The last entries are the probes of the final weights.
    np.testing.assert_allclose(
        history.history["grad_norm"][-1], probes.gradient_norm(model, probe_data), rtol=1e-5
    )
    final = probes.hessian_trace(model, probe_data, max_probes=4, min_probes=4, seed=0, verbose=0)
    np.testing.assert_allclose(history.history["hessian_trace"][-1], final.estimate, rtol=1e-4)
    assert [("hessian_trace" in k, "grad_norm" in k) for k in recorder.keys] == [
        (False, True),
        (True, True),
        (False, True),
        (True, True),
    ]


def test_tensorboard_receives_the_curves(digits, tmp_path):
    pytest.importorskip("tensorboard", reason="keras.callbacks.TensorBoard needs tensorboard")
    (x, y), _ = digits
    model = _model()
    model.fit(
        x[:128],
        y[:128],
        epochs=2,
        batch_size=64,
        verbose=0,
        callbacks=[
            callbacks.HessianTraceLogger((x[:64], y[:64]), max_probes=2, min_probes=2),
            callbacks.GradientNormLogger((x[:64], y[:64])),
            keras.callbacks.TensorBoard(str(tmp_path)),
        ],
    )
    tags = _tensorboard_tags(str(tmp_path))
    assert {"epoch_hessian_trace", "epoch_grad_norm", "epoch_loss"} <= tags


def test_loggers_do_not_change_training(digits):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    plain = _model()
    plain.fit(x, y, epochs=2, batch_size=64, verbose=0, shuffle=False)
    logged = _model()
    logged.fit(
        x,
        y,
        epochs=2,
        batch_size=64,
        verbose=0,
        shuffle=False,
        callbacks=[
            callbacks.HessianTraceLogger((x, y), max_probes=2, min_probes=2),
            callbacks.GradientNormLogger((x, y)),
        ],
    )
    for a, b in zip(plain.weights, logged.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("cls", [callbacks.HessianTraceLogger, callbacks.GradientNormLogger])
def test_logger_validation(cls):
    with pytest.raises(
        ValueError, match="every_n_epochs must be a positive int. Received: every_n_epochs=0"
    ):
        cls((np.zeros((2, 3)), np.zeros(2)), every_n_epochs=0)
    with pytest.raises(ValueError, match="Probe data is empty"):
        cls((np.zeros((0, 3)), np.zeros(0)))


def test_terminate_on_nan_import_paths():
    from kqrobust.callbacks.terminate_on_nan import TerminateOnNaN

    assert callbacks.TerminateOnNaN is TerminateOnNaN
    assert kq.callbacks is callbacks and kq.callbacks.TerminateOnNaN is TerminateOnNaN


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [pytest.param("fpq", marks=pytest.mark.ci), "robust"])
def test_loggers_with_the_robust_train_step(digits, recipe):
    """The loggers on QuantModel's custom train_step (SFP + CSD, SymReg + SatNL + ASAM)."""
    (x, y), _ = digits
    x, y = x[:128], y[:128]
    qmodel = kq.quantize_model(
        kq.testing.small_cnn(width=8), recipe=recipe, weight_bits=4, activation_bits=4
    )
    qmodel.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS)
    history = qmodel.fit(
        x,
        y,
        epochs=2,
        batch_size=64,
        verbose=0,
        callbacks=[
            callbacks.HessianTraceLogger((x[:64], y[:64]), max_probes=2, min_probes=2),
            callbacks.GradientNormLogger((x[:64], y[:64])),
        ],
    )
    for key in ("loss", "hessian_trace", "grad_norm"):
        assert len(history.history[key]) == 2 and np.all(np.isfinite(history.history[key])), key
