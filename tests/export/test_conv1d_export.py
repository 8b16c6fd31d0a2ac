"""A keyword-spotting-like Conv1D network at W4A8: full-int8 TFLite, checked in LiteRT.

Conv1D (causal, strided) + BN + ReLU, SeparableConv1D (quantized as
DepthwiseConv1D + Conv1D) + BN + ReLU, a dilated DepthwiseConv1D with
multiplier 2, a 1x1 Conv1D, GlobalAveragePooling1D and Dense, on MFCC-shaped
(49, 10) inputs. TFLite runs the 1-D layers as CONV_2D / DEPTHWISE_CONV_2D on
a height-1 image; their int8 weights must be exactly k times the QAT codes.
"""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.runtime import interpreter_ops
from kqrobust.export.tflite import float_ops
from kqrobust.testing import int8_codes

NUM_CLASSES = 6


def kws_data(n=512, seed=0):
    """MFCC-shaped `(n, 49, 10)` inputs: one fixed pattern per class plus noise."""
    rng = np.random.default_rng(seed)
    templates = rng.normal(size=(NUM_CLASSES, 49, 10))
    y = rng.integers(0, NUM_CLASSES, n)
    return (templates[y] + rng.normal(size=(n, 49, 10))).astype(np.float32), y


def kws_model():
    inputs = keras.Input((49, 10))
    x = keras.layers.Conv1D(16, 5, strides=2, padding="causal", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="conv_bn")(x))
    x = keras.layers.SeparableConv1D(16, 3, padding="same", use_bias=False, name="sep")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="sep_bn")(x))
    x = keras.layers.DepthwiseConv1D(
        3, depth_multiplier=2, dilation_rate=2, padding="same", name="dw"
    )(x)
    x = keras.layers.Conv1D(16, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(NUM_CLASSES, name="logits")(x))


@pytest.fixture(scope="module")
def exported():
    """`(qmodel, flatbuffer, x)`: W4A8 LSQ, one epoch of QAT, full-int8 TFLite."""
    x, y = kws_data()
    qmodel = kq.quantize_model(
        kws_model(), recipe="lsq", weight_bits=4, activation_bits=8, calibration_data=x[:256]
    )
    qmodel.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(x[:256], y[:256], batch_size=32, epochs=1, verbose=0)
    return qmodel, kq.export.to_tflite(qmodel, x[:200]), x


def test_every_kernel_layer_is_quantized(exported):
    qmodel, _, _ = exported
    kinds = {layer.name: type(layer).__name__ for layer in qmodel.layers}
    assert kinds["conv"] == "QuantConv1D" and kinds["pw"] == "QuantConv1D"
    assert kinds["sep_depthwise"] == "QuantDepthwiseConv1D"
    assert kinds["sep_pointwise"] == "QuantConv1D"
    assert kinds["dw"] == "QuantDepthwiseConv1D" and kinds["logits"] == "QuantDense"
    assert "sep" not in kinds
    # The GlobalAveragePooling1D of a ReLU output keeps it >= 0: an unsigned input.
    assert not qmodel.get_layer("logits").input_quantizer.signed


def test_litert_matches_the_export_graph(exported):
    qmodel, flatbuffer, x = exported
    runner = TFLiteRunner(flatbuffer)
    ops = {op["op_name"] for op in interpreter_ops(runner.interpreter)}
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"} <= ops
    assert not float_ops(flatbuffer)
    expected = kq.export.export_model(qmodel, x[:200]).predict(x, verbose=0)
    actual = runner.predict(x)
    assert np.mean(expected.argmax(-1) == actual.argmax(-1)) >= 0.98
    assert np.abs(expected - actual).mean() / runner.output_scale <= 0.5


@pytest.mark.parametrize(
    "layer_name,bn_name",
    [
        ("conv", "conv_bn"),
        ("sep_depthwise", None),
        ("sep_pointwise", "sep_bn"),
        ("dw", None),
        ("pw", None),
        ("logits", None),
    ],
)
def test_int8_weights_are_the_lsq_codes(layer_name, bn_name, exported):
    """Conv1D through the CONV_2D weight layout, DepthwiseConv1D through the
    DEPTHWISE_CONV_2D one: 15 times the 4-bit codes, 1 times the 8-bit codes
    of the first and last layers."""
    qmodel, flatbuffer, _ = exported
    codes = int8_codes.check_int8_codes(
        TFLiteRunner(flatbuffer).interpreter, qmodel, layer_name, bn_name
    )
    assert len(np.unique(codes)) >= 3  # Not collapsed.
