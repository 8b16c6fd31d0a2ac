"""The main job's SGD: weight decay is coupled L2 through momentum, as in the papers."""

import pathlib

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.pipeline.optim import paper_optimizer
from kqrobust.testing import run_script_report

NAMES = ["kernel", "depthwise_kernel", "bias", "gamma", "beta", "kernel_step", "input_offset"]
DECAYED = {"kernel", "depthwise_kernel"}


def numpy_sgd_l2(weights, gradients, learning_rates, momentum, l2, decayed):
    """SGD-momentum with coupled L2: g += l2*w; v = m*v - lr*g; w += v."""
    weights = {n: w.astype(np.float64).copy() for n, w in weights.items()}
    velocity = {n: np.zeros_like(w) for n, w in weights.items()}
    for step_grads, lr in zip(gradients, learning_rates):
        for name, w in weights.items():
            g = step_grads[name] + (l2 * w if name in decayed else 0.0)
            velocity[name] = momentum * velocity[name] - lr * g
            weights[name] = w + velocity[name]
    return weights


def run_optimizer(optimizer, weights, gradients):
    variables = [keras.Variable(w, name=n) for n, w in weights.items()]
    for step_grads in gradients:
        optimizer.apply([step_grads[v.name] for v in variables], variables)
    return {v.name: v.numpy() for v in variables}


def test_paper_sgd_matches_numpy_coupled_l2():
    rng = np.random.default_rng(0)
    weights = {n: rng.normal(size=(3, 4)).astype("float32") for n in NAMES}
    gradients = [{n: rng.normal(size=(3, 4)).astype("float32") for n in NAMES} for _ in range(5)]
    lr, steps, l2 = 0.1, 5, 0.05
    schedule = [0.5 * lr * (1 + np.cos(np.pi * k / steps)) for k in range(steps)]
    got = run_optimizer(paper_optimizer(lr, 1, steps, l2), weights, gradients)
    expected = numpy_sgd_l2(weights, gradients, schedule, 0.9, l2, DECAYED)
    for name in NAMES:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # Steps, offsets, BatchNorm and biases follow plain SGD-momentum.
    plain = numpy_sgd_l2(weights, gradients, schedule, 0.9, 0.0, DECAYED)
    for name in set(NAMES) - DECAYED:
        np.testing.assert_allclose(got[name], plain[name], rtol=1e-5, atol=1e-6)
    assert not np.allclose(got["kernel"], plain["kernel"], atol=1e-3)


def test_l2_is_stronger_than_keras_decoupled_decay_with_momentum():
    """A zero-gradient kernel shrinks by ~lr*wd/(1-m) per step, not lr*wd."""
    weights = {"kernel": np.ones((2, 2), "float32")}
    gradients = [{"kernel": np.zeros((2, 2), "float32")}] * 200
    coupled = run_optimizer(kq.training.SGDWithL2(0.1, momentum=0.9, l2=1e-2), weights, gradients)[
        "kernel"
    ][0, 0]
    decoupled = run_optimizer(
        keras.optimizers.SGD(0.1, momentum=0.9, weight_decay=1e-2), weights, gradients
    )["kernel"][0, 0]
    assert np.log(coupled) / np.log(decoupled) == pytest.approx(10, rel=0.1)


def test_adam_stays_decoupled_adamw():
    opt = paper_optimizer(1e-3, 1, 10, 1e-4, optimizer="adam")
    assert isinstance(opt, keras.optimizers.AdamW) and opt.weight_decay == pytest.approx(1e-4)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="l2 must be a float >= 0. Received: l2=-1"):
        kq.training.SGDWithL2(l2=-1)
    with pytest.raises(
        ValueError, match="does not take Keras' decoupled weight_decay.*Fix: pass l2"
    ):
        kq.training.SGDWithL2(weight_decay=1e-4)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' or 'adam'"):
        paper_optimizer(0.1, 1, 1, 0.0, optimizer="rmsprop")


def test_model_compiled_with_it_saves_and_loads(digits, tmp_path):
    (x, y), _ = digits
    qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe="lsq")
    qmodel.compile(
        optimizer=paper_optimizer(0.01, 1, 4, 1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    qmodel.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "qat.keras"
    qmodel.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, kq.training.SGDWithL2)
    assert loaded.optimizer.get_config() == qmodel.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 2
    for old, new in zip(qmodel.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(old), np.asarray(new))
    loaded.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)


@pytest.mark.slow
@pytest.mark.ci
def test_two_replicas_match_one_device():
    """Under MirroredStrategy the L2 term joins the all-reduced gradient once."""
    script = pathlib.Path(__file__).with_name("sgd_l2_mirrored.py")
    report = run_script_report(script, timeout=300)
    assert report["replicas"] == 2
    assert report["l2_effect"] > 1e-3  # the L2 term moved the kernel
    assert report["max_diff"] < 1e-5
