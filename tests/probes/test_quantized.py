"""Second derivatives through quantizers: the STE path is right, FakeQuant is not."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust import probes
from kqrobust.testing.hessian import LOSS
from kqrobust.testing.hessian import explicit_hessian
from kqrobust.testing.hessian import flatten
from kqrobust.testing.hessian import tiny_data
from kqrobust.testing.hessian import unflatten

# The explicit Hessians cover every trainable variable (the probes default to the kernels).
ALL = {"loss": LOSS, "variables": "trainable"}


class FakeQuantDense(keras.layers.Dense):
    """Dense with TF's FakeQuant ops on its input and kernel (the export form)."""

    def call(self, inputs):
        x = tf.quantization.fake_quant_with_min_max_vars(inputs, -3.0, 3.0, num_bits=4)
        kernel = tf.quantization.fake_quant_with_min_max_vars(
            self.kernel, -1.0, 1.0, num_bits=4, narrow_range=True
        )
        return self.activation(tf.matmul(x, kernel) + self.bias)


def _mlp(dense):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = dense(12, activation="tanh", name="hidden")(inputs)
    return keras.Model(inputs, dense(3, name="logits")(h))


def _lsq_model(x):
    recipe = kq.Recipe(weight_bits=4, activation_bits=4, first_last_bits=None)
    return kq.quantize_model(_mlp(keras.layers.Dense), recipe=recipe, calibration_data=x[:16])


def _relative_gap(a, b):
    a, b = flatten(a), flatten(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_ste_hvp_forward_reverse_and_explicit_agree():
    x, y = tiny_data(dtype="float32")
    model = _lsq_model(x)
    paths = [v.path for v in model.trainable_variables]
    assert any(p.endswith("kernel_step") for p in paths)
    assert any(p.endswith("input_step") for p in paths)
    hessian = explicit_hessian(model, x, y)
    v = np.random.default_rng(0).normal(size=hessian.shape[0]).astype("float32")
    vs = unflatten(v, model.trainable_variables)
    forward = probes.hessian_vector_product(model, (x, y), vs, **ALL, method="forward")
    reverse = probes.hessian_vector_product(model, (x, y), vs, **ALL, method="reverse")
    assert _relative_gap(forward, reverse) < 1e-4
    assert _relative_gap(forward, [hessian @ v]) < 1e-4
    assert np.max(np.abs(flatten(forward))) > 1e-3  # not trivially zero


def test_fake_quant_second_derivatives_disagree():
    """What would fail on the FakeQuant path: nested tapes and forward-over-reverse
    give different `Hv` (the kernels' blocks differ by orders of magnitude), so
    at least one of them is wrong. The same check passes on the STE path above."""
    x, y = tiny_data(dtype="float32")
    model = _mlp(FakeQuantDense)
    v = [
        np.random.default_rng(0).normal(size=w.shape).astype("float32")
        for w in model.trainable_variables
    ]
    forward = probes.hessian_vector_product(model, (x, y), v, **ALL, method="forward")
    reverse = probes.hessian_vector_product(model, (x, y), v, **ALL, method="reverse")
    assert _relative_gap(forward, reverse) > 0.5


@pytest.mark.slow
@pytest.mark.ci
def test_probes_run_on_quantized_and_robustified_cnns(digits):
    (x, y), _ = digits
    x, y = x[:64], y[:64]
    float_model = kq.testing.small_cnn()
    models = {"lsq": kq.quantize_model(float_model, recipe="lsq", weight_bits=4, activation_bits=4)}
    if hasattr(kq, "robustify"):
        models["robust"] = kq.robustify(float_model, recipe="robust")
    for name, model in models.items():
        model(x[:16], training=False)
        trace = probes.hessian_trace(model, (x, y), loss=LOSS, max_probes=2, seed=0, verbose=0)
        norm = probes.gradient_norm(model, (x, y), loss=LOSS)
        assert np.isfinite(trace.estimate) and trace.num_probes <= 2, name
        assert norm > 0, name


def _dense_bn(inputs=64):
    keras.utils.set_random_seed(0)
    x = keras.Input((inputs,))
    h = keras.layers.Dense(16, use_bias=False)(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.ReLU()(h)
    return keras.Model(x, keras.layers.Dense(10)(h))


def test_probes_leave_batchnorm_and_quantizer_state_untouched(digits):
    (x, y), _ = digits
    x, y = x[:64].reshape(64, -1), y[:64]
    model = kq.quantize_model(_dense_bn(), recipe="lsq", weight_bits=4, activation_bits=4)
    before = {v.path: np.array(v.numpy()) for v in model.weights}
    assert any(p.endswith("_initialized") for p in before)
    # Nested tapes: the state logic is shared by both methods, and tracing
    # forward-over-reverse through LSQ takes seconds.
    probes.hessian_trace(
        model, (x, y), loss=LOSS, max_probes=2, seed=0, verbose=0, method="reverse"
    )
    probes.top_hessian_eigenvalue(
        model, (x, y), loss=LOSS, max_iterations=2, seed=0, verbose=0, method="reverse"
    )
    probes.gradient_norm(model, (x, y), loss=LOSS)
    for v in model.weights:
        np.testing.assert_array_equal(v.numpy(), before[v.path], err_msg=v.path)


@pytest.mark.parametrize("method", ["forward", "reverse"])
def test_eval_mode_matches_an_inference_copy(digits, method):
    """Dropout and BatchNorm in eval mode: the probe equals the one of a model
    without dropout (same weights)."""
    (x, y), _ = digits
    x, y = x[:48].reshape(48, -1), y[:48]

    def build(rate):
        keras.utils.set_random_seed(0)
        inputs = keras.Input((64,))
        h = keras.layers.Dense(16, activation="tanh")(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Dropout(rate)(h)
        return keras.Model(inputs, keras.layers.Dense(10)(h))

    with_dropout, without = build(0.5), build(0.0)
    with_dropout.layers[2].moving_mean.assign(np.full(16, 0.1, "float32"))
    for source, target in zip(with_dropout.layers, without.layers):
        if not isinstance(source, keras.layers.Dropout):
            target.set_weights(source.get_weights())
    v = [np.ones(w.shape, "float32") for w in without.trainable_variables]
    a = probes.hessian_vector_product(with_dropout, (x, y), v, **ALL, method=method)
    b = probes.hessian_vector_product(without, (x, y), v, **ALL, method=method)
    np.testing.assert_allclose(flatten(a), flatten(b), rtol=1e-5, atol=1e-7)


def _kernel_lsq_mlp(grad_scale):
    """6 -> 12 (tanh) -> 3, each kernel quantized by LSQ at 4 bits (with or without `g`)."""
    keras.utils.set_random_seed(0)
    lsq = lambda: kq.quantizers.LSQ(bits=4, channel_axis=-1, grad_scale=grad_scale)  # noqa: E731
    inputs = keras.Input((6,))
    h = kq.layers.QuantDense(12, activation="tanh", name="hidden", kernel_quantizer=lsq())(inputs)
    return keras.Model(inputs, kq.layers.QuantDense(3, name="logits", kernel_quantizer=lsq())(h))


def test_probes_default_to_the_kernels_not_the_lsq_steps():
    """LSQ's gradient scale g multiplies a step's gradient by g and its curvature by
    g^2: probes over the kernels (the default) do not depend on it."""
    x, y = tiny_data(dtype="float32")
    scaled, unscaled = _kernel_lsq_mlp(True), _kernel_lsq_mlp(False)
    for model in (scaled, unscaled):
        model(x[:16])
        objective = probes.Objective(model, loss=LOSS)
        assert [v.path for v in objective.variables] == ["hidden/kernel", "logits/kernel"]
    for model, other in ((scaled, unscaled), (unscaled, scaled)):
        for v, w in zip(model.weights, other.weights):
            np.testing.assert_array_equal(v.numpy(), w.numpy())
    kwargs = {"loss": LOSS, "max_probes": 3, "seed": 0, "verbose": 0, "method": "reverse"}
    assert probes.gradient_norm(scaled, (x, y), loss=LOSS) == pytest.approx(
        probes.gradient_norm(unscaled, (x, y), loss=LOSS), rel=1e-6
    )
    assert probes.hessian_trace(scaled, (x, y), **kwargs).estimate == pytest.approx(
        probes.hessian_trace(unscaled, (x, y), **kwargs).estimate, rel=1e-5
    )
    # Over the steps, the scale shows: gradient times g, curvature times g^2.
    g = 1 / np.sqrt(6 * 7)  # N = 6 weights per output channel of "hidden", Qp = 7
    steps = {
        name: [m.get_layer("hidden").kernel_quantizer_weights["step"]]
        for name, m in (("scaled", scaled), ("unscaled", unscaled))
    }
    norms = {
        name: probes.gradient_norm(m, (x, y), loss=LOSS, variables=steps[name])
        for name, m in (("scaled", scaled), ("unscaled", unscaled))
    }
    assert norms["scaled"] == pytest.approx(g * norms["unscaled"], rel=1e-4)
    traces = {
        name: probes.hessian_trace(m, (x, y), variables=steps[name], **kwargs).estimate
        for name, m in (("scaled", scaled), ("unscaled", unscaled))
    }
    assert traces["scaled"] == pytest.approx(g**2 * traces["unscaled"], rel=1e-3)
