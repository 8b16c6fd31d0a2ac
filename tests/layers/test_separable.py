"""SeparableConv1D/2D: the rewrite into depthwise + pointwise layers and its quantization."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import model_graph
from kqrobust.layers import registry
from kqrobust.layers import rewrites

CASES = [
    (keras.layers.SeparableConv2D, (9, 9, 3), dict()),
    (keras.layers.SeparableConv2D, (9, 9, 3), dict(depth_multiplier=2, strides=2, padding="same")),
    (
        keras.layers.SeparableConv2D,
        (9, 9, 3),
        dict(dilation_rate=2, activation="relu", use_bias=False),
    ),
    (keras.layers.SeparableConv1D, (20, 3), dict(depth_multiplier=2, strides=2)),
    (
        keras.layers.SeparableConv1D,
        (20, 3),
        dict(dilation_rate=2, padding="same", activation="relu"),
    ),
]


def _separable_model(cls, shape, kwargs, sequential=False):
    layer = cls(5, 3, name="sep1", bias_initializer="random_normal", **kwargs)
    if sequential:
        return keras.Sequential([keras.Input(shape), layer])
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.ReLU()(layer(inputs)))


@pytest.mark.parametrize("sequential", [False, True])
@pytest.mark.parametrize("cls,shape,kwargs", CASES)
def test_expanded_model_equals_the_separable_model(cls, shape, kwargs, sequential):
    model = _separable_model(cls, shape, kwargs, sequential)
    expanded, _ = rewrites.expand_rewrites(model)
    depthwise, pointwise = (
        expanded.get_layer("sep1_depthwise"),
        expanded.get_layer("sep1_pointwise"),
    )
    assert type(depthwise).__name__ == f"DepthwiseConv{len(shape) - 1}D"
    assert type(pointwise).__name__ == f"Conv{len(shape) - 1}D"
    assert depthwise.use_bias is False and depthwise.activation.__name__ == "linear"
    assert pointwise.kernel_size == (1,) * (len(shape) - 1)
    assert tuple(depthwise.strides) == tuple(model.get_layer("sep1").strides)
    assert not any(isinstance(layer, cls) for layer in expanded.layers)
    x = np.random.default_rng(0).normal(size=(4,) + shape).astype(np.float32)
    np.testing.assert_allclose(
        expanded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_model_without_rewrites_is_returned_unchanged():
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    overrides = {"conv2d": {"weight_bits": 8}}
    assert rewrites.expand_rewrites(model, overrides) == (model, overrides)


def test_nested_and_shared_separable_layers():
    inner_inputs = keras.Input((8, 8, 4))
    inner = keras.Model(
        inner_inputs,
        keras.layers.SeparableConv2D(4, 3, padding="same", name="inner_sep")(inner_inputs),
        name="block",
    )
    shared = keras.layers.SeparableConv2D(4, 3, padding="same", name="shared")
    inputs = keras.Input((8, 8, 4))
    outputs = shared(inner(shared(inputs)))
    model = keras.Model(inputs, outputs)
    expanded, _ = rewrites.expand_rewrites(model)
    names = [layer.name for layer in model_graph.flat_layers(expanded)]
    assert names.count("shared_depthwise") == 1 and "inner_sep_pointwise" in names
    assert isinstance(expanded.get_layer("block"), keras.Model)  # Nested models stay nested.
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(
        expanded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def _kws_like():
    inputs = keras.Input((16, 4))
    x = keras.layers.Conv1D(8, 3, name="stem")(inputs)
    x = keras.layers.SeparableConv1D(8, 3, depth_multiplier=2, name="sep1")(x)
    x = keras.layers.BatchNormalization(name="sep1_bn")(x)
    x = keras.layers.SeparableConv1D(8, 3, activation="relu", name="sep2")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x))


def test_quantize_model_quantizes_both_parts():
    qmodel = kq.quantize_model(_kws_like(), recipe="lsq", weight_bits=4, activation_bits=8)
    quantized = {
        layer.name: type(layer).__name__
        for layer in qmodel.layers
        if registry.layer_type_of(layer) is not None
    }
    assert quantized == {
        "stem": "QuantConv1D",
        "sep1_depthwise": "QuantDepthwiseConv1D",
        "sep1_pointwise": "QuantConv1D",
        "sep2_depthwise": "QuantDepthwiseConv1D",
        "sep2_pointwise": "QuantConv1D",
        "head": "QuantDense",
    }
    assert qmodel.get_layer("sep1_depthwise").kernel_quantizer.bits == 4
    assert qmodel.get_layer("sep1_depthwise").kernel_quantizer_weights["step"].shape == (8, 2)
    # The teacher computes the float model.
    x = np.random.default_rng(2).normal(size=(4, 16, 4)).astype(np.float32)
    np.testing.assert_allclose(
        qmodel.teacher.predict(x, verbose=0),
        _kws_like_with_weights(qmodel.teacher).predict(x, verbose=0),
        rtol=1e-5,
        atol=1e-5,
    )


def _kws_like_with_weights(teacher):
    """A fresh `_kws_like()` with the teacher's weights (separable kernels re-joined)."""
    model = _kws_like()
    for layer in model.layers:
        if isinstance(layer, keras.layers.SeparableConv1D):
            depthwise = teacher.get_layer(f"{layer.name}_depthwise")
            pointwise = teacher.get_layer(f"{layer.name}_pointwise")
            layer.set_weights([depthwise.kernel.numpy()] + pointwise.get_weights())
        elif layer.weights:
            layer.set_weights(teacher.get_layer(layer.name).get_weights())
    return model


@pytest.mark.parametrize("key", ["sep1", "sep[1]", "sep1_pointwise"])
def test_overrides_on_the_original_name_apply_to_both_parts(key):
    qmodel = kq.quantize_model(
        _kws_like(),
        recipe="lsq",
        weight_bits=4,
        activation_bits=8,
        layer_overrides={key: {"weight_bits": 6}},
    )
    bits = {
        name: qmodel.get_layer(name).kernel_quantizer.bits
        for name in ("sep1_depthwise", "sep1_pointwise", "sep2_depthwise")
    }
    assert bits == {
        "sep1_depthwise": 6 if key != "sep1_pointwise" else 4,
        "sep1_pointwise": 6,
        "sep2_depthwise": 4,
    }


def test_skip_override_keeps_both_parts_float():
    qmodel = kq.quantize_model(_kws_like(), layer_overrides={"sep2": {"skip": True}})
    assert type(qmodel.get_layer("sep2_depthwise")) is keras.layers.DepthwiseConv1D
    assert type(qmodel.get_layer("sep2_pointwise")) is keras.layers.Conv1D


def test_fpq_treats_both_parts_as_conv_layers():
    """SFP perturbs the inputs of every conv and depthwise layer (FPQ)."""
    qmodel = kq.quantize_model(_kws_like(), recipe="fpq", weight_bits=4, activation_bits=4)
    for name in ("sep1_depthwise", "sep1_pointwise"):
        assert qmodel.get_layer(name).input_perturbation is not None, name
    assert qmodel.get_layer("head").input_perturbation is None


def test_register_rewrite_refuses_a_second_rule():
    with pytest.raises(ValueError, match="rewrite rule already"):
        rewrites.register_rewrite(keras.layers.SeparableConv2D, lambda layer: ([], None))


def test_sequential_in_sequential_is_expanded():
    block = keras.Sequential(
        [keras.Input((8, 8, 2)), keras.layers.SeparableConv2D(3, 3, strides=2, name="sep_in")]
    )
    model = keras.Sequential(
        [keras.Input((8, 8, 2)), block, keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    expanded, _ = rewrites.expand_rewrites(model)
    names = [layer.name for layer in model_graph.flat_layers(expanded)]
    assert "sep_in_depthwise" in names and "sep_in" not in names
    x = np.random.default_rng(3).normal(size=(2, 8, 8, 2)).astype(np.float32)
    np.testing.assert_allclose(
        expanded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_ptq_calibrates_both_parts():
    model = _kws_like()
    x = np.random.default_rng(4).normal(size=(64, 16, 4)).astype(np.float32)
    pmodel = kq.ptq.quantize(
        model,
        x,
        method="aciq",
        weight_bits=8,
        activation_bits=8,
        bias_correction=True,
        layer_overrides={"sep1": {"weight_bits": 6}},
    )
    assert pmodel.get_layer("sep1_depthwise").kernel_quantizer.bits == 6
    assert pmodel.get_layer("sep1_pointwise").kernel_quantizer.bits == 6
    expected, actual = model.predict(x, verbose=0), pmodel.predict(x, verbose=0)
    assert np.corrcoef(expected.ravel(), actual.ravel())[0, 1] > 0.99
