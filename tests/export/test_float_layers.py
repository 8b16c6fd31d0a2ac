"""Float layers and Keras-tensor arithmetic through full-int8 TFLite.

Each small model puts one float layer type (or one piece of Keras-tensor
arithmetic, as keras.applications writes hard-swish: `x * relu6(x + 3) / 6`)
between two convolutions, is trained briefly on digits, and is exported
both as a float model (PTQ-style) and after `kq.quantize_model` at W4A8.
LiteRT must agree with the Keras export graph (`kq.export.export_model`),
and no op of the `.tflite` may compute in float.
"""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.tflite import float_ops

layers = keras.layers
ops = keras.ops


def _arithmetic(x):
    """hard-swish as keras.applications' MobileNetV3 writes it, plus `x / y`."""
    gate = ops.relu6(x + 3) / 6
    return x * gate


def _squeeze_excite(x):
    gate = layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = layers.Dense(x.shape[-1], activation="sigmoid")(gate)
    return layers.Multiply()([x, gate])


def _concatenate(x):
    branch = layers.Conv2D(4, 1, activation="relu")(x)
    return layers.Concatenate()([x, branch])


# name -> the float part, applied after the first convolution.
BODIES = {
    "arithmetic": _arithmetic,
    "layer_normalization": lambda x: layers.LayerNormalization()(x),
    "gelu": lambda x: layers.Activation("gelu")(x),
    "gelu_tanh": lambda x: ops.gelu(x, approximate=True),
    "hard_swish": lambda x: layers.Activation("hard_swish")(x),
    "hard_sigmoid": lambda x: layers.Activation("hard_sigmoid")(x),
    "squeeze_excite": _squeeze_excite,
    "upsampling": lambda x: layers.UpSampling2D()(x),
    "zero_padding": lambda x: layers.ZeroPadding2D()(x),
    "concatenate": _concatenate,
    "swish": lambda x: layers.Activation("swish")(x),
    "sigmoid_conv": lambda x: layers.Conv2D(8, 1, activation="sigmoid")(x),
    "gelu_dense": lambda x: layers.Dense(8, activation="gelu")(x),
}

# name -> the preprocessing layer in front of the first convolution (pixels in 0..255).
PREPROCESSING = {
    "rescaling": lambda data: layers.Rescaling(1 / 127.5, offset=-1),
    "normalization": lambda data: _adapted_normalization(data),
}


def _adapted_normalization(data):
    normalization = layers.Normalization()
    normalization.adapt(data)
    return normalization


def _model(name, x_train):
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x_train.shape[1:])
    x = inputs
    if name in PREPROCESSING:
        x = PREPROCESSING[name](x_train)(x)
    x = layers.Conv2D(8, 3, padding="same")(x)
    x = BODIES.get(name, lambda t: t)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name=name)


def _pixels(name, x):
    return x * 255.0 if name in PREPROCESSING else x


@pytest.fixture(scope="module")
def trained(digits):
    """`{name: (model, x_train, x_test)}`, each float model trained 10 epochs (the
    LayerNormalization model needs them: 39% after 3, 87% after 10)."""
    (x_train, y_train), (x_test, _) = digits
    models = {}
    for name in list(BODIES) + list(PREPROCESSING):
        train, test = _pixels(name, x_train), _pixels(name, x_test)
        model = _model(name, train)
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(train, y_train, batch_size=64, epochs=10, verbose=0)
        models[name] = (model, train, test)
    return models


def _litert_agreement(model, x_train, x_test):
    """Argmax agreement of LiteRT with the Keras export graph, and the float ops."""
    flatbuffer = kq.export.to_tflite(model, x_train)
    graph = kq.export.export_model(model, x_train)
    expected = np.asarray(graph.predict(x_test, verbose=0)).argmax(-1)
    found = TFLiteRunner(flatbuffer).predict(x_test).argmax(-1)
    return float(np.mean(expected == found)), float_ops(flatbuffer)


# Measured below 98% (seed 0, 359 test digits): open. UpSampling2D converts to
# RESHAPE + TILE with an int8 requantize, Concatenate to CONCATENATION at its
# output scale; the export graph does not model either exactly yet.
KNOWN_GAPS = {
    ("upsampling", "lsq_w4a8"): "0.969",
    ("concatenate", "lsq_w4a8"): "0.972",
}


def _cases():
    for name in list(BODIES) + list(PREPROCESSING):
        for recipe in ("float", "lsq_w4a8"):
            yield pytest.param(name, recipe, id=f"{name}-{recipe}")


@pytest.mark.parametrize("name,recipe", list(_cases()))
def test_float_layer_round_trips_full_int8(name, recipe, trained):
    model, x_train, x_test = trained[name]
    if recipe != "float":
        model = kq.quantize_model(
            model, recipe="lsq", weight_bits=4, activation_bits=8, calibration_data=x_train[:256]
        )
    agreement, leftovers = _litert_agreement(model, x_train, x_test)
    assert not leftovers
    if agreement < 0.98 and (name, recipe) in KNOWN_GAPS:
        pytest.xfail(f"agreement {agreement:.3f}; measured {KNOWN_GAPS[name, recipe]}")
    assert agreement >= 0.98, agreement


def test_keras_tensor_operations_get_their_own_ranges(trained):
    model, x_train, _ = trained["arithmetic"]
    graph = kq.export.export_model(model, x_train)
    names = {op.name for op in graph.operations}
    arithmetic = [op.name for op in model.operations if not isinstance(op, keras.layers.Layer)]
    assert len(arithmetic) == 4  # add, relu6, true_divide, multiply
    assert {f"{name}_fq" for name in arithmetic} <= names


def test_normalization_is_rewritten_exactly(trained):
    model, x_train, x_test = trained["normalization"]
    graph = kq.export.export_model(model, x_train, fake_quant=False)
    np.testing.assert_allclose(
        graph.predict(x_test, verbose=0), model.predict(x_test, verbose=0), rtol=1e-4, atol=1e-4
    )
    assert not any(
        isinstance(layer, keras.layers.Normalization)
        for layer in kq.export.export_model(model, x_train).layers
    )


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("include_preprocessing", [False, True])
def test_mobilenet_v3_small_full_int8(include_preprocessing):
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3),
        weights=None,
        classes=10,
        classifier_activation=None,
        include_preprocessing=include_preprocessing,
    )
    low, high = (0.0, 255.0) if include_preprocessing else (-1.0, 1.0)
    x = np.random.default_rng(0).uniform(low, high, (300, 32, 32, 3)).astype(np.float32)
    agreement, leftovers = _litert_agreement(model, x[:200], x[200:])
    assert not leftovers
    assert agreement >= 0.98, agreement
