"""FPQ's CSD against NumPy; its teacher (frozen, inference mode, one forward); layer matching."""

import pathlib

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.testing import run_script_report
from kqrobust.training.csd import csd_loss


def np_csd(students, teachers, eps=1e-5):
    total = 0.0
    for z_s, z_t in zip(students, teachers):

        def standardize(z):
            z = z.astype(np.float64)
            axes = tuple(range(z.ndim - 1))
            return (z - z.mean(axes)) / np.sqrt(z.var(axes) + eps)

        diff = standardize(z_t) - standardize(z_s)
        for c in range(diff.shape[-1]):
            total += np.mean(diff[..., c] ** 2)
    return total


def test_loss_matches_numpy():
    rng = np.random.default_rng(0)
    students = [
        rng.normal(1, 2, (4, 5, 5, 3)).astype("float32"),
        rng.normal(0, 1, (4, 2, 2, 6)).astype("float32"),
    ]
    teachers = [rng.normal(-1, 3, s.shape).astype("float32") for s in students]
    np.testing.assert_allclose(
        float(csd_loss(students, teachers)), np_csd(students, teachers), rtol=1e-5
    )
    # Scale- and shift-invariant per channel; zero for an affine copy.
    assert float(csd_loss([students[0]], [3 * students[0] + 2])) == pytest.approx(0, abs=1e-4)


def fpq_model(recipe=None):
    model = kq.testing.small_cnn(width=4)
    return model, kq.quantize_model(model, recipe=recipe or "fpq", weight_bits=4, activation_bits=4)


def compile_model(qmodel, **kwargs):
    qmodel.compile(
        optimizer=keras.optimizers.SGD(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **kwargs,
    )


@pytest.mark.parametrize("recipe", ["fpq", kq.Recipe(sam="sam", csd_weight=0.5)])
def test_teacher_runs_once_per_step_in_inference_mode(digits, recipe):
    (x, y), _ = digits
    _, qmodel = fpq_model(recipe)
    teacher = qmodel.teacher
    before = [v.numpy().copy() for v in teacher.weights]
    stem = teacher.get_layer("stem_bn")
    calls = []
    original = stem.call

    def counting_call(inputs, training=None, **kwargs):
        calls.append(training)
        return original(inputs, training=training, **kwargs)

    stem.call = counting_call
    compile_model(qmodel, run_eagerly=True)
    qmodel.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert calls == [False, False]  # one teacher forward per step, inference mode
    for old, new in zip(before, teacher.weights):
        np.testing.assert_array_equal(old, new.numpy())  # BN statistics included


def test_csd_joins_the_loss(digits):
    (x, y), _ = digits
    _, qmodel = fpq_model()
    assert qmodel.csd_layer_names() == ["stem", "dw", "pw", "conv2"]
    compile_model(qmodel)
    qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # init the steps
    student, teacher = qmodel._csd_models()
    _, features = student(x[:32], training=True)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
        y[:32], qmodel(x[:32], training=True)
    )
    expected = float(ce) + np_csd(
        [np.asarray(f) for f in features], [np.asarray(f) for f in teacher(x[:32], training=False)]
    )
    assert expected > float(ce) + 0.01
    # The reported loss of a zero-lr step is the loss at the current weights.
    qmodel.optimizer.learning_rate.assign(0.0)
    history = qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, shuffle=False)
    assert history.history["loss"][0] == pytest.approx(expected, rel=0.05)


def test_missing_or_mismatched_teacher_fails_clearly(digits):
    (x, y), _ = digits
    _, qmodel = fpq_model()
    qmodel.set_teacher(None)
    compile_model(qmodel)
    with pytest.raises(ValueError, match="has none .*Fix: call qmodel.set_teacher"):
        qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    other = kq.testing.small_cnn(width=8)
    qmodel.set_teacher(other)
    with pytest.raises(ValueError, match="no teacher conv layer of the same name and output"):
        qmodel.csd_layer_names()


@pytest.mark.parametrize(
    "recipe", [kq.Recipe(csd_weight=0.5), kq.Recipe(sam="sam", csd_weight=0.5)]
)
def test_task_and_csd_terms_are_logged_apart(digits, recipe):
    """`loss = task_loss + csd_loss`; `task_loss` is the cross-entropy, `csd_loss` 0.5 L_CSD."""
    (x, y), _ = digits
    _, qmodel = fpq_model(recipe)
    compile_model(qmodel)
    qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)  # init the steps
    student, teacher = qmodel._csd_models()
    _, features = student(x[:32], training=True)
    ce = float(
        keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y[:32], qmodel(x[:32], training=True)
        )
    )
    csd = 0.5 * np_csd(
        [np.asarray(f) for f in features], [np.asarray(f) for f in teacher(x[:32], training=False)]
    )
    qmodel.optimizer.learning_rate.assign(0.0)  # the logged values are at these weights
    logs = {
        name: values[0]
        for name, values in qmodel.fit(
            x[:32],
            y[:32],
            batch_size=32,
            epochs=1,
            verbose=0,
            shuffle=False,
            validation_data=(x[32:64], y[32:64]),
        ).history.items()
    }
    assert logs["task_loss"] == pytest.approx(ce, rel=1e-4)
    assert logs["csd_loss"] == pytest.approx(csd, rel=1e-4)
    assert logs["loss"] == pytest.approx(ce + csd, rel=1e-4)
    assert "val_csd_loss" not in logs and "val_task_loss" not in logs
    assert set(qmodel.evaluate(x[:32], y[:32], verbose=0, return_dict=True)) == {"loss", "accuracy"}


def test_plain_recipes_log_no_csd_terms(digits):
    (x, y), _ = digits
    qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe="sam")
    compile_model(qmodel)
    history = qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}


@pytest.mark.slow
@pytest.mark.ci
def test_logged_terms_under_mirrored_strategy():
    """Two logical CPUs: the logs are means over replicas of per-replica CE and CSD."""
    script = pathlib.Path(__file__).with_name("csd_mirrored.py")
    report = run_script_report(script, timeout=300)
    assert report["replicas"] == 2
    for name in ("task_loss", "csd_loss", "loss"):
        assert report["logged"][name] == pytest.approx(report["expected"][name], rel=1e-4), name
    # Per-replica statistics: not the CSD of the whole batch at once.
    assert report["expected"]["csd_loss"] != pytest.approx(report["global_batch_csd"], rel=1e-3)


def test_loaded_model_is_compiled_and_logs_the_terms(digits, tmp_path):
    (x, y), _ = digits
    model, qmodel = fpq_model(kq.Recipe(csd_weight=1.0))
    compile_model(qmodel)
    qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    qmodel.save(tmp_path / "csd.keras")
    loaded = keras.models.load_model(tmp_path / "csd.keras")
    assert loaded.compiled and int(loaded.optimizer.iterations) == 1
    loaded.set_teacher(model)
    history = loaded.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    assert {"loss", "task_loss", "csd_loss", "accuracy"} <= set(history.history)


def test_set_teacher_after_fit_trains_against_the_new_teacher(digits):
    """The traced step holds the teacher's feature model: set_teacher traces anew."""
    (x, y), _ = digits
    _, qmodel = fpq_model(kq.Recipe(csd_weight=1.0))
    compile_model(qmodel)
    qmodel.optimizer.learning_rate.assign(0.0)
    qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    qmodel.set_teacher(kq.testing.small_cnn(width=4, seed=1))
    student, teacher = qmodel._csd_models()
    _, features = student(x[:32], training=True)
    expected = np_csd(
        [np.asarray(f) for f in features], [np.asarray(f) for f in teacher(x[:32], training=False)]
    )
    logs = qmodel.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0, shuffle=False).history
    assert logs["csd_loss"][0] == pytest.approx(expected, rel=1e-4)
