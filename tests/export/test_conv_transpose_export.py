"""An encoder-decoder with Conv2DTranspose at W4A8: full-int8 TFLite, checked in LiteRT.

Conv2D (stride 2) + BN + ReLU encodes the 8x8 digits to 4x4; a
Conv2DTranspose (stride 2) + BN + ReLU and an UpSampling2D branch decode
back to 8x8; a Concatenate joins both with the input (the skip), then
Conv2D, GlobalAveragePooling2D and Dense(10). TFLite runs the transposed
convolution as TRANSPOSE_CONV, whose int8 weights `(out, kh, kw, in)` must
be exactly k times the QAT codes, per output channel once the BatchNorm is
folded.
"""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.runtime import interpreter_ops
from kqrobust.export.tflite import float_ops
from kqrobust.testing import int8_codes


def encoder_decoder(transpose_padding="same", output_padding=None):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="enc")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="enc_bn")(x))
    kernel = 3 if transpose_padding == "same" else 2  # "valid": 4x4 -> 8x8 too
    up = keras.layers.Conv2DTranspose(
        8, kernel, strides=2, padding=transpose_padding, output_padding=output_padding, name="dec"
    )(x)
    up = keras.layers.ReLU()(keras.layers.BatchNormalization(name="dec_bn")(up))
    nearest = keras.layers.UpSampling2D(2, name="upsample")(x)
    x = keras.layers.Concatenate(name="skip")([up, nearest, inputs])
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="head")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _qat(model, digits):
    (x_train, y_train), _ = digits
    qmodel = kq.quantize_model(
        model, recipe="lsq", weight_bits=4, activation_bits=8, calibration_data=x_train[:256]
    )
    qmodel.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    qmodel.fit(x_train[:256], y_train[:256], batch_size=32, epochs=1, verbose=0)
    return qmodel


@pytest.fixture(scope="module")
def exported(digits):
    """`(qmodel, flatbuffer, x)`: W4A8 LSQ, one epoch of QAT, full-int8 TFLite."""
    keras.utils.set_random_seed(0)
    qmodel = _qat(encoder_decoder(), digits)
    (x_train, _), (x_test, _) = digits
    return qmodel, kq.export.to_tflite(qmodel, x_train[:200]), np.concatenate([x_train, x_test])


def test_every_kernel_layer_is_quantized(exported):
    qmodel, _, _ = exported
    kinds = {layer.name: type(layer).__name__ for layer in qmodel.layers}
    assert kinds["dec"] == "QuantConv2DTranspose"
    assert kinds["enc"] == kinds["head"] == "QuantConv2D" and kinds["logits"] == "QuantDense"
    assert qmodel.get_layer("dec").kernel_quantizer.bits == 4


def test_litert_matches_the_export_graph(exported):
    qmodel, flatbuffer, x = exported
    runner = TFLiteRunner(flatbuffer)
    ops = {op["op_name"] for op in interpreter_ops(runner.interpreter)}
    # Keras' UpSampling2D (nearest) is a repeat: int8 RESHAPE + TILE in TFLite.
    assert {"TRANSPOSE_CONV", "TILE", "CONCATENATION", "CONV_2D"} <= ops
    assert not float_ops(flatbuffer)
    assert not [
        t["name"] for t in runner.interpreter.get_tensor_details() if t["dtype"] == np.float32
    ]
    expected = kq.export.export_model(qmodel, x[:200]).predict(x, verbose=0)
    actual = runner.predict(x)
    # LiteRT's integer arithmetic (int32 accumulation, fixed-point requantization) differs
    # from the float export graph by one LSB at rounding boundaries, which the following
    # 4-bit layers amplify (measured up to 12 output LSBs after one epoch of QAT): an
    # argmax flips only where the top-2 margin is within that.
    lsb = np.abs(expected - actual) / runner.output_scale
    top2 = np.sort(expected, -1)
    clear = (top2[:, -1] - top2[:, -2]) / runner.output_scale > 16
    flips = expected.argmax(-1) != actual.argmax(-1)
    assert not flips[clear].any(), (lsb.max(), flips.mean())
    assert flips.mean() <= 0.05 and lsb.mean() <= 1.0, (flips.mean(), lsb.mean())


def test_transpose_conv_int8_weights_are_the_lsq_codes(exported):
    """The TRANSPOSE_CONV weights are 15 times the 4-bit codes, per output channel
    (dimension 0), signs flipped where the folded BN's scale is negative."""
    qmodel, flatbuffer, _ = exported
    interpreter = TFLiteRunner(flatbuffer).interpreter
    assert np.ndim(qmodel.get_layer("dec").kernel_quantizer_weights["step"]) == 0
    codes = int8_codes.check_int8_codes(interpreter, qmodel, "dec", "dec_bn")
    assert len(np.unique(codes)) >= 3  # Not collapsed.
    # Two BN scales of different magnitude: two different int8 scales (per channel).
    scales = [
        t["quantization_parameters"]["scales"]
        for t in interpreter.get_tensor_details()
        if t["name"].endswith("dec_1/conv_transpose") and t["dtype"] == np.int8
    ]
    assert len(scales) == 1 and scales[0].size == 8 and np.unique(scales[0]).size > 1
    int8_codes.check_int8_codes(interpreter, qmodel, "head")


@pytest.mark.parametrize("padding,output_padding", [("valid", None), ("same", 1)])
def test_padding_and_output_padding_export(padding, output_padding, digits):
    """ "valid" padding and an explicit output_padding convert to TRANSPOSE_CONV
    with exact codes and LiteRT agreeing with the export graph (no training; a
    BatchNorm with negative scales flips the signs of its channels' codes)."""
    (x_train, _), _ = digits
    model = encoder_decoder(padding, output_padding)
    rng = np.random.default_rng(5)
    bn = model.get_layer("dec_bn")
    bn.set_weights(
        [
            rng.choice([-1.0, 1.0], 8) * rng.uniform(0.5, 2, 8),
            rng.normal(0, 0.2, 8),
            rng.normal(0, 0.2, 8),
            rng.uniform(0.5, 2, 8),
        ]
    )
    qmodel = kq.quantize_model(
        model, recipe="lsq", weight_bits=4, activation_bits=8, calibration_data=x_train[:256]
    )
    flatbuffer = kq.export.to_tflite(qmodel, x_train[:200])
    assert not float_ops(flatbuffer)
    runner = TFLiteRunner(flatbuffer)
    int8_codes.check_int8_codes(runner.interpreter, qmodel, "dec", "dec_bn")
    expected = kq.export.export_model(qmodel, x_train[:200]).predict(x_train, verbose=0)
    actual = runner.predict(x_train)
    assert np.mean(expected.argmax(-1) == actual.argmax(-1)) >= 0.98
