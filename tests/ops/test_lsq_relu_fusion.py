"""An unsigned LSQ grid after a ReLU: the fast paths quantize the ReLU's input
(the grid's lower clip is the ReLU), so a traced step runs neither the ReLU nor
its gradient. Values and both LSQ gradients (Esser et al., ICLR 2020, eq. 1-3)
are the reference's `relu` then `lsq_quantize`, but where the ReLU's input is
exactly 0."""

import numpy as np
import pytest
import tensorflow as tf

from kqrobust import ops as kops

BITS = (2, 4, 8)


def relu_then_quantize(implementation, z, step, bits):
    """`x_hat`, `d sum(w * x_hat) / dz` and `/ ds` through `relu` then the quantizer."""
    weights = tf.constant(np.linspace(-1.5, 2.0, z.size).astype("float32"))

    @tf.function
    def run(z, step):
        with tf.GradientTape() as tape:
            tape.watch([z, step])
            y = kops.lsq_quantize(
                tf.nn.relu(z),
                step,
                bits,
                signed=False,
                grad_scale=0.3,
                implementation=implementation,
            )
            loss = tf.reduce_sum(weights * y)
        return [y] + tape.gradient(loss, [z, step])

    return [t.numpy() for t in run(tf.constant(z), tf.constant(step))], weights.numpy()


def hard_inputs(step, bits):
    """Exact ties and the upper clip boundary with its neighbours, negative
    values, random values, and no exact zero (where the two differ)."""
    qp = 2**bits - 1
    step = np.float32(step)
    codes = np.arange(0, qp + 2, dtype=np.float32)
    ties = (codes + np.float32(0.5)) * step
    ties = ties[ties / step == codes + np.float32(0.5)]
    top = np.float32(qp) * step
    near = [top, np.nextafter(top, np.float32(np.inf)), np.nextafter(top, np.float32(-np.inf))]
    rng = np.random.default_rng(bits)
    noise = rng.normal(size=300).astype("float32") * np.float32(qp / 2) * step
    z = np.concatenate([ties, near, -ties, noise, [-1e-30, 1e-30]]).astype("float32")
    return z[z != 0]


@pytest.mark.parametrize("implementation", ["kernel", "fused"])
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("step", [0.37, 0.0625, 1.7e-3])
def test_fast_paths_after_relu_match_the_reference(implementation, bits, step):
    z = hard_inputs(step, bits)
    (fast, weights) = relu_then_quantize(implementation, z, np.float32(step), bits)
    (reference, _) = relu_then_quantize("reference", z, np.float32(step), bits)
    np.testing.assert_array_equal(fast[0], reference[0])  # bit for bit, ties included
    np.testing.assert_allclose(fast[1], reference[1], rtol=0, atol=1e-6)
    # The mask of the ReLU then the clip, and LSQ's eq. 3 on u = max(z, 0) / s
    # summed in float64.
    qp = 2**bits - 1
    u = (tf.nn.relu(tf.constant(z)) / np.float32(step)).numpy()
    np.testing.assert_array_equal(fast[1], np.where((z > 0) & (u <= qp), weights, 0))
    per_element = np.where(u <= qp, np.round(u) - u, qp).astype(np.float64)
    ds = 0.3 * np.sum(weights.astype(np.float64) * per_element)
    np.testing.assert_allclose(fast[2], ds, rtol=1e-6)


@pytest.mark.parametrize("implementation", ["kernel", "fused"])
def test_at_exact_zero_the_clip_passes_the_gradient(implementation):
    """The one difference from `relu` then quantize: at a ReLU input of exactly 0
    the quantizer's clip passes the gradient, where `ReluGrad` gives 0."""
    z = np.array([-1.0, 0.0, 0.2, 0.9], "float32")
    (fast, weights) = relu_then_quantize(implementation, z, np.float32(0.25), 4)
    (reference, _) = relu_then_quantize("reference", z, np.float32(0.25), 4)
    np.testing.assert_array_equal(fast[0], reference[0])
    np.testing.assert_array_equal(fast[1], [0.0, weights[1], weights[2], weights[3]])
    np.testing.assert_allclose(reference[1], [0.0, 0.0, weights[2], weights[3]], atol=1e-6)
    np.testing.assert_allclose(fast[2], reference[2], rtol=1e-6)


def _gradient_op_types(bits, signed, offset=None, implementation="auto"):
    @tf.function
    def step_gradient(z, s):
        with tf.GradientTape() as tape:
            tape.watch([z, s])
            y = kops.lsq_quantize(
                tf.nn.relu(z), s, bits, signed=signed, offset=offset, implementation=implementation
            )
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, [z, s])

    graph = step_gradient.get_concrete_function(
        tf.TensorSpec((4, 8), tf.float32), tf.TensorSpec((), tf.float32)
    ).graph
    return {op.type for op in graph.get_operations()}


def test_traced_step_skips_the_relu_gradient_on_an_unsigned_grid():
    assert "ReluGrad" not in _gradient_op_types(4, signed=False)
    # A signed grid, an offset (LSQ+) or the reference path keep the ReLU.
    assert "ReluGrad" in _gradient_op_types(4, signed=True)
    assert "ReluGrad" in _gradient_op_types(4, signed=False, offset=tf.constant(0.1))
    assert "ReluGrad" in _gradient_op_types(4, signed=False, implementation="reference")


def test_eager_inputs_are_quantized_as_they_are():
    z = tf.constant([-1.0, 0.3, 2.6], tf.float32)
    x_hat = kops.lsq_quantize(tf.nn.relu(z), tf.constant(0.5), 4, signed=False)
    np.testing.assert_array_equal(x_hat.numpy(), [0.0, 0.5, 2.5])


def test_a_relu_read_elsewhere_too_gets_both_gradients():
    """When another op reads the ReLU's output, its gradient still flows through
    the ReLU, and the quantizer's straight to the ReLU's input."""
    z = tf.constant(np.linspace(-2, 2, 9).astype("float32") + 0.01)

    def run(implementation):
        @tf.function
        def f(z):
            with tf.GradientTape() as tape:
                tape.watch(z)
                r = tf.nn.relu(z)
                q = kops.lsq_quantize(r, 0.25, 4, signed=False, implementation=implementation)
                loss = tf.reduce_sum(q * 1.5) + tf.reduce_sum(r * r)
            return tape.gradient(loss, z)

        return f(z).numpy()

    np.testing.assert_allclose(run("kernel"), run("reference"), rtol=1e-6)


def test_nested_tapes_give_the_reference_hessian_after_relu():
    """Second derivatives in the step and a scale of the ReLU's input by nested
    tapes: the reference's (no exact zero in the data)."""
    z = tf.constant(np.random.default_rng(0).normal(size=64).astype("float32"))
    w = tf.constant(np.random.default_rng(1).normal(size=64).astype("float32"))

    def hessian(implementation):
        @tf.function
        def f(params):
            with tf.GradientTape() as outer:
                outer.watch(params)
                with tf.GradientTape() as inner:
                    inner.watch(params)
                    a, s = params[0], params[1]
                    q = kops.lsq_quantize(
                        tf.nn.relu(a * z), s, 4, signed=False, implementation=implementation
                    )
                    loss = tf.reduce_sum(w * q * q)
                grad = inner.gradient(loss, params)
            return outer.jacobian(grad, params)

        return f(tf.constant([1.3, 0.2])).numpy()

    reference = hessian("reference")
    for implementation in ("kernel", "fused"):  # as tests/ops/test_lsq_fused.py compares H v
        assert np.abs(hessian(implementation) - reference).max() <= 1e-5 * np.abs(reference).max()
    assert np.abs(reference).max() > 1e-2


@pytest.mark.parametrize("calibrated", [True, False], ids=["calibrated", "first_batch"])
def test_quantized_model_step_runs_no_relu(calibrated):
    """`kq.quantize_model` on a Functional model with Keras' defaults (ReLU
    layers and a Conv2D's own `activation="relu"`): every ReLU feeds an
    unsigned quantizer, so nothing in the traced training gradient reads a
    ReLU's output (the step skips it) and there is no `ReluGrad`. Without
    calibration data the step-initialisation `cond` recomputes the ReLU in
    its branch instead of reading it."""
    import keras

    import kqrobust as kq

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    data = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    qmodel = kq.quantize_model(
        model,
        recipe="lsq",
        weight_bits=4,
        activation_bits=4,
        calibration_data=data if calibrated else None,
    )

    @tf.function
    def gradients(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(qmodel(x, training=True) ** 2)
        return tape.gradient(loss, qmodel.trainable_variables)

    graph = gradients.get_concrete_function(tf.TensorSpec((16, 8, 8, 3), tf.float32)).graph
    relus = [op for op in graph.get_operations() if op.type == "Relu"]
    assert len(relus) == 2  # (the cond branches' are in their own graphs)
    assert all(not op.outputs[0].consumers() for op in relus)
    assert "ReluGrad" not in {op.type for op in graph.get_operations()}
    gradients(data)  # and it runs
