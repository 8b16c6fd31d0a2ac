"""The probes trace the model inside `kq.ops.exact_derivatives()`: the LSQ
quantizers' default (kernel) path is exact to first order and under nested
tapes, not under `tf.autodiff.ForwardAccumulator`, which the forward-over-reverse
Hessian-vector product uses."""

import contextlib

import keras
import numpy as np

import kqrobust as kq
from kqrobust import probes
from kqrobust.probes import objective as objective_module
from kqrobust.testing.hessian import LOSS
from kqrobust.testing.hessian import explicit_hessian
from kqrobust.testing.hessian import flatten
from kqrobust.testing.hessian import tiny_data
from kqrobust.testing.hessian import unflatten

ALL = {"loss": LOSS, "variables": "trainable"}


def _lsq_model(x):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, activation="tanh", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    recipe = kq.Recipe(weight_bits=4, activation_bits=4, first_last_bits=None)
    return kq.quantize_model(model, recipe=recipe, calibration_data=x[:16])


def _gap(a, b):
    a, b = flatten(a), flatten(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def _forward_hvp(model, x, y, v):
    return probes.hessian_vector_product(model, (x, y), v, **ALL, method="forward")


def test_forward_hvp_is_exact_only_on_the_exact_path(monkeypatch):
    """With the context the forward-over-reverse `Hv` is the explicit Hessian's
    (nested tapes, the default kernel path); with the context switched off the
    same probe is wrong, so the probes' use of it is what makes them right."""
    x, y = tiny_data(dtype="float32")
    model = _lsq_model(x)
    hessian = explicit_hessian(model, x, y)  # nested tapes on the default path
    v = np.random.default_rng(0).normal(size=hessian.shape[0]).astype("float32")
    vs = unflatten(v, model.trainable_variables)
    assert _gap(_forward_hvp(model, x, y, vs), [hessian @ v]) < 1e-4
    monkeypatch.setattr(objective_module.kq_ops, "exact_derivatives", contextlib.nullcontext)
    assert _gap(_forward_hvp(model, x, y, vs), [hessian @ v]) > 1e-2


def test_exact_derivatives_selects_the_path_when_traced():
    """`"auto"` is the kernel path outside the context and the fused path
    inside it (nested contexts too), chosen when the function is traced."""
    import tensorflow as tf

    def op_types():
        fn = tf.function(lambda x: kq.ops.lsq_quantize(x, 0.1, 4))
        graph = fn.get_concrete_function(tf.TensorSpec((4,), tf.float32)).graph
        return {op.type for op in graph.get_operations()}

    assert not kq.ops.exact_derivatives_active()
    assert "ClipByValue" not in op_types()
    with kq.ops.exact_derivatives():
        with kq.ops.exact_derivatives():
            assert "ClipByValue" in op_types()
        assert kq.ops.exact_derivatives_active()
        assert "ClipByValue" in op_types()
    assert not kq.ops.exact_derivatives_active()
    assert "ClipByValue" not in op_types()


def test_exact_derivatives_is_left_after_an_error():
    try:
        with kq.ops.exact_derivatives():
            raise RuntimeError("inside")
    except RuntimeError:
        pass
    assert not kq.ops.exact_derivatives_active()
