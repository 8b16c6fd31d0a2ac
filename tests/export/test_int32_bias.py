"""The full-integer export graph computes what LiteRT computes, also for MobileNetV2-like blocks.

TFLite stores each bias as int32 with the scale `s_in * t_c` (input scale
times the channel's int8 weight scale); the export graph carries the bias
rounded to that grid (`ranges.int32_bias`). Before, the graph kept the float
bias: in keras.applications MobileNetV2 (alpha 0.35, 32x32 digits, W4A8) it
was off by up to 0.22 output steps (first layer, untrained), outputs crossed
rounding boundaries, and the inverted-residual stack amplified each flipped
step: after QAT, LiteRT agreed with the graph on 92% of the test digits.
"""

import re

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import export
from kqrobust.export import ranges
from kqrobust.export import tensors
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.quantized_layers import input_quantizer_holders

# (expansion, output channels, stride) per inverted-residual block, as MobileNetV2's table.
BLOCKS = ((1, 8, 1), (6, 8, 1), (6, 12, 2), (6, 12, 1))


def inverted_residual(x, expansion, channels, stride, name):
    """MobileNetV2's block (Sandler et al., "MobileNetV2: Inverted Residuals and
    Linear Bottlenecks", CVPR 2018, Table 1), with keras.applications' layers:
    expand 1x1 + BN + ReLU6, ZeroPadding2D before a stride-2 depthwise, linear
    1x1 projection + BN, residual Add when the shape is kept."""
    inputs = x
    if expansion != 1:
        x = keras.layers.Conv2D(expansion * x.shape[-1], 1, use_bias=False, name=f"{name}_expand")(
            x
        )
        x = keras.layers.BatchNormalization(name=f"{name}_expand_bn")(x)
        x = keras.layers.ReLU(6.0, name=f"{name}_expand_relu")(x)
    if stride == 2:
        x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"{name}_pad")(x)
    x = keras.layers.DepthwiseConv2D(
        3,
        strides=stride,
        use_bias=False,
        padding="same" if stride == 1 else "valid",
        name=f"{name}_depthwise",
    )(x)
    x = keras.layers.BatchNormalization(name=f"{name}_depthwise_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"{name}_depthwise_relu")(x)
    x = keras.layers.Conv2D(channels, 1, use_bias=False, name=f"{name}_project")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_project_bn")(x)
    if stride == 1 and inputs.shape[-1] == channels:
        x = keras.layers.Add(name=f"{name}_add")([inputs, x])
    return x


def mobilenet_v2_like(seed=0):
    """An untrained inverted-residual stack on 8x8x1 digits (stem, four blocks, head)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU(6.0, name="stem_relu")(x)
    for index, (expansion, channels, stride) in enumerate(BLOCKS):
        x = inverted_residual(x, expansion, channels, stride, f"block_{index}")
    x = keras.layers.Conv2D(64, 1, use_bias=False, name="head")(x)
    x = keras.layers.BatchNormalization(name="head_bn")(x)
    x = keras.layers.ReLU(6.0, name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="mobilenet_v2_like")


@pytest.fixture(scope="module")
def mobilenet_export(digits, tmp_path_factory):
    """`(qmodel, path, calibration)`: the untrained stack at W4A8, steps and
    BatchNorm statistics from the training digits, exported to int8 TFLite."""
    (x_train, _), _ = digits
    qmodel = kq.quantize_model(
        mobilenet_v2_like(), weight_bits=4, activation_bits=8, calibration_data=x_train[:256]
    )
    kq.recalibrate_batchnorm(qmodel, x_train)
    path = str(tmp_path_factory.mktemp("int32_bias") / "mobilenet_v2_like.tflite")
    # More samples than to_tflite's num_samples: export_model must pick the same ones.
    export.to_tflite(qmodel, x_train[:256], path)
    return qmodel, path, x_train[:256]


def test_int32_bias_matches_numpy():
    rng = np.random.default_rng(0)
    bias = rng.normal(0, 1, 6)
    input_range = (-0.731, 5.2)
    kernel_hi = 127 * rng.uniform(1e-3, 1e-2, 6)
    rounded = ranges.int32_bias(bias, input_range, (-kernel_hi, kernel_hi))
    s_in = np.float32(np.float32(5.2) - np.float32(-0.731)) / np.float32(255)
    step = np.float64(s_in) * np.float32(kernel_hi / 127).astype(np.float64)
    np.testing.assert_allclose(rounded, np.round(bias / step) * step, rtol=1e-6)
    np.testing.assert_allclose(rounded / step, np.round(rounded / step), atol=1e-3)
    assert np.all(np.abs(rounded - bias) <= 0.5 * step * (1 + 1e-6))


def test_read_ranges_look_through_padding_and_folded_batchnorm():
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.ReLU(6.0, name="relu")(inputs)
    x = keras.layers.ZeroPadding2D(((0, 1), (0, 1)), name="pad")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, name="dw")(x)
    y = keras.layers.Conv2D(2, 1, name="pw")(inputs)
    model = keras.Model(inputs, [x, y])
    found = tensors.read_ranges(
        model, ["dw", "pw"], {"relu": (0.0, 6.0), tensors.INPUT: (-1.0, 1.0)}, set()
    )
    assert found == {"dw": (0.0, 6.0), "pw": (-1.0, 1.0)}


def _tflite_biases(path, names):
    """`{layer name: float bias}` of the int32 biases in the file, dequantized."""
    interpreter = TFLiteRunner(path).interpreter
    biases = {}
    for tensor in interpreter.get_tensor_details():
        params = tensor["quantization_parameters"]
        if tensor["dtype"] != np.int32 or params["scales"].size < 2:
            continue
        found = [n for n in names if re.search(rf"/{n}_\d+/(add|BiasAdd)", tensor["name"])]
        if len(found) == 1:
            biases[found[0]] = interpreter.get_tensor(tensor["index"]) * params["scales"]
    return biases


def test_export_graph_biases_are_the_int32_biases(mobilenet_export):
    qmodel, path, calibration = mobilenet_export
    graph = export.export_model(qmodel, calibration)
    names = ["stem", "head"] + [
        f"block_{i}_{part}" for i in range(len(BLOCKS)) for part in ("depthwise", "project")
    ]
    biases = _tflite_biases(path, names)
    assert set(names) == set(biases), sorted(biases)
    inputs = input_quantizer_holders(qmodel)
    for name in names:
        layer = graph.get_layer(name)
        step = np.abs(np.asarray(layer.kernel_range[1])) / 127
        # The layer's own input range, or that of the QuantIdentity it reads (an expand conv's
        # input, which the residual Add reads too, has one quantizer).
        low, high = layer.input_range or inputs[name].export_input_ranges()[0]
        scale = (high - low) / 255 * step
        # In int32 bias steps: the graph's bias is the file's integer, not just close to it.
        np.testing.assert_allclose(
            np.asarray(layer.bias) / scale, biases[name] / scale, rtol=0, atol=1e-3, err_msg=name
        )


def test_litert_matches_export_graph_on_mobilenet_v2_blocks(mobilenet_export, all_digits):
    """Every tensor is int8 in both; what differs is only rounding at exact
    ties (float32 FakeQuant versus integer requantization)."""
    qmodel, path, calibration = mobilenet_export
    x, _ = all_digits
    result = export.verify(path, export.export_model(qmodel, calibration), x, print_report=False)
    assert result.agreement >= 0.995, result.table()
    assert result.mean_abs_diff_lsb <= 0.05, result.table()


@pytest.fixture(scope="module")
def rounded_export(digits, tmp_path_factory):
    """`(qmodel, path, outputs before rounding)`: the stack at W4A8 as
    `mobilenet_export`, its biases then rounded by `kq.round_biases_to_int32`."""
    (x_train, _), (x_test, _) = digits
    qmodel = kq.quantize_model(
        mobilenet_v2_like(seed=1), weight_bits=4, activation_bits=8, calibration_data=x_train[:256]
    )
    kq.recalibrate_batchnorm(qmodel, x_train)
    # Untrained, the classifier's bias is 0, on every grid: give it one off its grid.
    qmodel.get_layer("logits").bias.assign(np.random.default_rng(0).normal(0, 0.1, 10))
    before = qmodel.predict(x_test, verbose=0)
    moved = kq.round_biases_to_int32(qmodel)
    assert len(moved) == 1 + 3 * len(BLOCKS) - 1 + 2  # every conv (block_0 has no expand), logits
    path = str(tmp_path_factory.mktemp("rounded") / "mobilenet_v2_like.tflite")
    export.to_tflite(qmodel, x_train[:256], path)
    return qmodel, path, before


def _folded_bias_and_step(qmodel, name, bn_name):
    """NumPy: the folded bias `beta - a * mean` (`a = gamma / sqrt(var + eps)`,
    no conv bias) and its int32 step `s_in * |a| * s_w / k` (Jacob et al.,
    CVPR 2018, sec. 2.4; `k = 15` at 4 bits, `kq.export.ranges`)."""
    layer, bn = qmodel.get_layer(name), qmodel.get_layer(bn_name)
    a = np.asarray(bn.gamma, np.float64) / np.sqrt(
        np.asarray(bn.moving_variance, np.float64) + bn.epsilon
    )
    bias = np.asarray(bn.beta, np.float64) - a * np.asarray(bn.moving_mean, np.float64)
    holder = input_quantizer_holders(qmodel)[name]
    s_in = float(np.asarray(holder.input_quantizer.effective_step(holder.input_quantizer_weights)))
    s_w = np.asarray(layer.kernel_quantizer.effective_step(layer.kernel_quantizer_weights))
    k = 127 // max(layer.kernel_quantizer.levels)
    return bias, s_in * np.abs(a) * s_w.reshape(-1) / k


def test_round_biases_puts_every_folded_bias_on_its_int32_grid(rounded_export):
    qmodel, _, _ = rounded_export
    pairs = [("stem", "stem_bn"), ("head", "head_bn")] + [
        (f"block_{i}_{part}", f"block_{i}_{part}_bn")
        for i in range(len(BLOCKS))
        for part in ("expand", "depthwise", "project")
        if i or part != "expand"
    ]
    for name, bn_name in pairs:
        bias, step = _folded_bias_and_step(qmodel, name, bn_name)
        np.testing.assert_allclose(bias / step, np.round(bias / step), atol=1e-3, err_msg=name)
    logits = qmodel.get_layer("logits")  # no BatchNorm: its own bias, step s_in * s_w
    holder = input_quantizer_holders(qmodel)["logits"]
    s_in = float(np.asarray(holder.input_quantizer.effective_step(holder.input_quantizer_weights)))
    s_w = np.asarray(logits.kernel_quantizer.effective_step(logits.kernel_quantizer_weights))
    units = np.asarray(logits.bias, np.float64) / (s_in * s_w.reshape(-1))
    np.testing.assert_allclose(units, np.round(units), atol=1e-3)


def test_rounded_keras_model_computes_what_litert_computes(rounded_export, digits):
    """With its biases rounded, the Keras model's int8 logits are LiteRT's
    (XNNPACK, the default kernels), code for code. Before, 4.7% of the test
    digits had another argmax (one run)."""
    qmodel, path, before = rounded_export
    _, (x_test, _) = digits
    lite = TFLiteRunner(path).predict(x_test)
    after = qmodel.predict(x_test, verbose=0)
    output = qmodel.get_layer("logits_quant")
    step = float(np.asarray(output.input_quantizer.effective_step(output.input_quantizer_weights)))
    same = np.round(after / step) == np.round(lite / step)
    assert same.mean() >= 0.999, same.mean()
    assert np.mean(np.round(before / step) == np.round(lite / step)) < 0.9
    assert np.mean(np.argmax(after, -1) == np.argmax(lite, -1)) == 1.0


def test_rounding_twice_moves_nothing_beyond_float32(rounded_export):
    qmodel, _, _ = rounded_export
    for name, bn_name in (("stem", "stem_bn"), ("block_3_project", "block_3_project_bn")):
        bias, step = _folded_bias_and_step(qmodel, name, bn_name)
        beta = np.asarray(qmodel.get_layer(bn_name).beta).copy()
        kq.round_biases_to_int32(qmodel)
        moved = np.asarray(qmodel.get_layer(bn_name).beta) - beta
        assert np.all(np.abs(moved) <= 1e-4 * step), name


def test_round_biases_needs_a_graph_model():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="round_biases_to_int32"):
        kq.round_biases_to_int32(Subclassed())
