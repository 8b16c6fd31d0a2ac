"""A SeparableConv2D network on digits at W4A8: full-int8 TFLite, checked in LiteRT.

`kq.quantize_model` rewrites each SeparableConv2D into DepthwiseConv2D +
1x1 Conv2D (as the converter lowers it, and as tfmot's
`SeparableConvQuantize` does); both parts keep their 4-bit codes exactly in
the `.tflite` (DEPTHWISE_CONV_2D written after conversion, CONV_2D through its
per-channel FakeQuant).
"""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.tflite import float_ops
from kqrobust.testing import int8_codes


def separable_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="stem_bn")(x))
    x = keras.layers.SeparableConv2D(16, 3, padding="same", use_bias=False, name="sep1")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="sep1_bn")(x))
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.SeparableConv2D(
        16, 3, depth_multiplier=2, strides=2, padding="same", activation="relu", name="sep2"
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


@pytest.fixture(scope="module")
def exported(digits):
    """`(qmodel, flatbuffer, x)`: W4A8 LSQ, one epoch of QAT on digits, full-int8 TFLite."""
    (x_train, y_train), _ = digits
    qmodel = kq.quantize_model(
        separable_model(),
        recipe="lsq",
        weight_bits=4,
        activation_bits=8,
        calibration_data=x_train[:256],
    )
    qmodel.compile(
        keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(x_train[:256], y_train[:256], batch_size=32, epochs=1, verbose=0)
    return qmodel, kq.export.to_tflite(qmodel, x_train[:200]), x_train[:512]


def test_every_kernel_layer_is_quantized(exported):
    qmodel, _, _ = exported
    kinds = {layer.name: type(layer).__name__ for layer in qmodel.layers}
    for name in ("sep1", "sep2"):
        assert kinds[f"{name}_depthwise"] == "QuantDepthwiseConv2D"
        assert kinds[f"{name}_pointwise"] == "QuantConv2D"
        assert name not in kinds


def test_litert_matches_the_export_graph(exported):
    qmodel, flatbuffer, x = exported
    runner = TFLiteRunner(flatbuffer)
    assert not float_ops(flatbuffer)
    expected = kq.export.export_model(qmodel, x[:200]).predict(x, verbose=0)
    actual = runner.predict(x)
    assert np.mean(expected.argmax(-1) == actual.argmax(-1)) >= 0.98
    assert np.abs(expected - actual).mean() / runner.output_scale <= 0.5


@pytest.mark.parametrize(
    "layer_name,bn_name",
    [
        ("stem", "stem_bn"),
        ("sep1_depthwise", None),
        ("sep1_pointwise", "sep1_bn"),
        ("sep2_depthwise", None),
        ("sep2_pointwise", None),
        ("logits", None),
    ],
)
def test_int8_weights_are_the_lsq_codes(layer_name, bn_name, exported):
    qmodel, flatbuffer, _ = exported
    codes = int8_codes.check_int8_codes(
        TFLiteRunner(flatbuffer).interpreter, qmodel, layer_name, bn_name
    )
    assert len(np.unique(codes)) >= 3  # Not collapsed.
