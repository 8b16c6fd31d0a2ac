"""SAM and ASAM steps against a hand-computed two-pass update (docs/methods.md#sam-and-asam)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.training.sam import perturbed_variables
from kqrobust.training.sam import sam_perturbation

LR = 0.1


def tiny_model(batchnorm=False):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, bias_initializer="glorot_uniform", name="fc")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(center=False, scale=False, name="bn")(x)
    return keras.Model(inputs, x)


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(8, 4)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")


def np_grads(w, b, x, t):
    """Gradients of `mean((x w + b - t)^2)` w.r.t. `w` and `b`."""
    r = x @ w + b - t
    scale = 2.0 / r.size
    return scale * x.T @ r, scale * r.sum(0)


def np_step(w, b, x, t, method, rho, eta):
    gw, _ = np_grads(w, b, x, t)
    if method == "sam":
        e = rho * gw / np.linalg.norm(gw)
    else:
        scale = np.abs(w) + eta
        e = rho * scale**2 * gw / np.linalg.norm(scale * gw)
    gw2, gb2 = np_grads(w + e, b, x, t)  # the bias is not perturbed
    return w - LR * gw2, b - LR * gb2


def fit_one_step(recipe, model, jit_compile=False):
    rmodel = kq.robustify(model, recipe=recipe)
    rmodel.batchnorm_samples = 0  # the train step itself is under test, not the recalibration
    rmodel.compile(
        optimizer=keras.optimizers.SGD(LR), loss="mse", metrics=["mae"], jit_compile=jit_compile
    )
    x, t = data()
    history = rmodel.fit(x, t, batch_size=8, epochs=1, shuffle=False, verbose=0)
    return rmodel, history


@pytest.mark.parametrize(
    "method,rho,eta,jit_compile",
    [
        ("sam", 0.05, 0.01, False),
        ("asam", 0.5, 0.01, False),
        ("asam", 1.0, 0.1, False),
        ("sam", 0.05, 0.01, True),
        ("asam", 0.5, 0.01, True),
    ],
)
def test_one_step_matches_hand_computed_update(method, rho, eta, jit_compile):
    model = tiny_model()
    w0, b0 = (v.numpy().astype(np.float64) for v in model.get_layer("fc").weights)
    rmodel, history = fit_one_step(kq.Recipe(sam=method, rho=rho, eta=eta), model, jit_compile)
    x, t = data()
    w1, b1 = np_step(w0, b0, x.astype(np.float64), t.astype(np.float64), method, rho, eta)
    layer = rmodel.get_layer("fc")
    np.testing.assert_allclose(layer.kernel.numpy(), w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), b1, rtol=1e-5, atol=1e-6)
    # The loss tracker and compiled metrics report the unperturbed first pass.
    r = x @ w0 + b0 - t
    assert history.history["loss"][0] == pytest.approx(np.mean(r**2), rel=1e-5)
    assert history.history["mae"][0] == pytest.approx(np.mean(np.abs(r)), rel=1e-5)


def test_plain_step_differs_from_sam_step():
    model = tiny_model()
    w0, b0 = (v.numpy().astype(np.float64) for v in model.get_layer("fc").weights)
    rmodel, _ = fit_one_step(kq.Recipe(sam="sam", rho=0.5), model)
    x, t = data()
    gw, _ = np_grads(w0, b0, x, t)
    assert not np.allclose(rmodel.get_layer("fc").kernel.numpy(), w0 - LR * gw, atol=1e-4)


def test_batchnorm_statistics_updated_once_by_the_first_pass():
    model = tiny_model(batchnorm=True)
    w0, b0 = (v.numpy() for v in model.get_layer("fc").weights)
    rmodel, _ = fit_one_step(kq.Recipe(sam="asam", rho=1.0), model)
    x, _ = data()
    z = x @ w0 + b0
    bn = rmodel.get_layer("bn")
    # One update with Keras' default momentum from (0, 1), on the unperturbed weights.
    m = bn.momentum
    assert m == 0.99
    np.testing.assert_allclose(bn.moving_mean.numpy(), (1 - m) * z.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), m + (1 - m) * z.var(0), rtol=1e-5, atol=1e-7
    )


def test_perturbation_helper_matches_numpy():
    rng = np.random.default_rng(5)
    weights = [rng.normal(size=(3, 2)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    grads = [rng.normal(size=(3, 2)).astype("float32"), None]
    sam = sam_perturbation(grads, weights, 0.05)
    flat = np.concatenate([grads[0].ravel()])
    np.testing.assert_allclose(sam[0].numpy(), 0.05 * grads[0] / np.linalg.norm(flat), rtol=1e-5)
    np.testing.assert_array_equal(sam[1].numpy(), np.zeros(4))
    asam = sam_perturbation(grads, weights, 0.5, adaptive=True, eta=0.01)
    t = np.abs(weights[0]) + 0.01
    np.testing.assert_allclose(
        asam[0].numpy(), 0.5 * t**2 * grads[0] / np.linalg.norm(t * grads[0]), rtol=1e-5
    )


def test_only_kernels_are_perturbed():
    qmodel = kq.quantize_model(kq.testing.small_cnn(width=4), recipe="asam")
    names = {v.path for v in perturbed_variables(qmodel)}
    assert names == {f"{n}/kernel" for n in ("stem", "dw", "pw", "conv2", "logits")}


@pytest.mark.slow
@pytest.mark.ci
def test_mixed_precision_asam_step_is_finite(digits):
    (x, y), _ = digits
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = kq.testing.small_cnn(width=4)
        qmodel = kq.quantize_model(model, recipe="robust", weight_bits=4, activation_bits=4)
        qmodel.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        history = qmodel.fit(x[:128], y[:128], batch_size=32, epochs=1, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(v.numpy()).all() for v in qmodel.weights)


def test_sam_with_any_compiled_loss_and_sample_weights():
    model = tiny_model()
    rmodel = kq.robustify(model, recipe=kq.Recipe(sam="sam"))
    rmodel.compile(optimizer="sgd", loss=keras.losses.Huber(), metrics=["mse"])
    x, t = data()
    sw = np.linspace(0.1, 1.0, 8).astype("float32")
    history = rmodel.fit(x, t, sample_weight=sw, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all() and history.history["loss"][0] > 0
    assert tf.reduce_all(tf.math.is_finite(rmodel.get_layer("fc").kernel.value))


def test_sfp_noise_is_not_replayed_by_the_sam_restore(digits):
    """SAM restores the state its second pass changed, but not the noise generators."""
    (x, y), _ = digits
    recipe = kq.Recipe(name="sam_sfp", sam="sam", sfp_p=1.0, weight_bits=4, activation_bits=4)
    qmodel = kq.quantize_model(kq.testing.small_cnn(), recipe=recipe, calibration_data=x[:64])
    qmodel.compile(keras.optimizers.SGD(LR), keras.losses.SparseCategoricalCrossentropy(True))
    generator = next(
        layer.input_perturbation.seed_generator
        for layer in qmodel.layers
        if getattr(layer, "input_perturbation", None) is not None
    )
    start = generator.state.numpy().copy()
    qmodel.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)
    # Two passes of one step advance every generator twice (Keras' SeedGenerator adds 1 per draw).
    np.testing.assert_array_equal(generator.state.numpy(), start + [0, 2])
