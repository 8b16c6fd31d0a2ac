"""Full-integer TFLite export, checked in LiteRT against the Keras model."""

import os

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.runtime import interpreter_ops
from kqrobust.export.runtime import litert_interpreter
from kqrobust.testing import int8_codes


@pytest.mark.parametrize("name", ["w8a8", "w4a8"])
@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_litert_matches_keras(name, io_dtype, exported, qat_models, all_digits):
    x, y = all_digits
    result = kq.export.verify(
        exported[name, io_dtype], qat_models[name], x, labels=y, print_report=False
    )
    assert result.runtime == "litert"
    assert result.num_samples == len(x)
    assert result.agreement >= 0.99, result.table()
    assert abs(result.runtime_accuracy - result.keras_accuracy) <= 0.005, result.table()
    assert result.keras_accuracy > 0.9, result.table()


@pytest.mark.parametrize("kernels", ["xnnpack", "builtin", "reference"])
def test_every_litert_kernel_set_runs_the_int8_file(kernels, exported, qat_models, all_digits):
    x, _ = all_digits
    runner = TFLiteRunner(exported["w8a8", "int8"], kernels=kernels)
    agreement = np.mean(
        np.argmax(runner.predict(x), -1) == np.argmax(qat_models["w8a8"].predict(x, verbose=0), -1)
    )
    assert agreement >= 0.99


def test_unknown_kernel_set_is_named(exported):
    with pytest.raises(ValueError, match="kernels must be one of .*Received: kernels='gpu'"):
        litert_interpreter(exported["w8a8", "int8"], kernels="gpu")


def test_classifier_codes_are_the_integer_arithmetic_of_its_inputs(exported, all_digits):
    """Read through `preserve_all_tensors`, the last FULLY_CONNECTED's int8
    output is the integer arithmetic of its int8 input, weights and int32
    bias (NumPy), to one code (LiteRT's requantization rounds twice)."""
    x, _ = all_digits
    runner = TFLiteRunner(exported["w8a8", "int8"], kernels="builtin")
    interpreter = litert_interpreter(
        exported["w8a8", "int8"], kernels="builtin", preserve_all_tensors=True
    )
    details = interpreter.get_tensor_details()
    dense = [op for op in interpreter_ops(interpreter) if op["op_name"] == "FULLY_CONNECTED"][-1]
    x_index, w_index, b_index = dense["inputs"]
    y_index = dense["outputs"][0]
    x_scale, x_zero = details[x_index]["quantization"]
    y_scale, y_zero = details[y_index]["quantization"]
    w_scales = details[w_index]["quantization_parameters"]["scales"]
    for sample in x[:8]:
        interpreter.set_tensor(runner.input["index"], runner.quantize_input(sample[None]))
        interpreter.invoke()
        codes = interpreter.get_tensor(x_index).reshape(1, -1).astype(np.int64) - x_zero
        weights = interpreter.get_tensor(w_index).astype(np.int64)
        acc = codes @ weights.T + interpreter.get_tensor(b_index)
        expected = np.clip(np.round(acc * x_scale * w_scales / y_scale) + y_zero, -128, 127)
        got = interpreter.get_tensor(y_index).reshape(expected.shape)
        assert np.max(np.abs(expected - got)) <= 1


@pytest.mark.parametrize("io_dtype,numpy_dtype", [("int8", np.int8), ("uint8", np.uint8)])
def test_io_dtype_and_every_op_integer(io_dtype, numpy_dtype, exported):
    with open(exported["w4a8", io_dtype], "rb") as f:
        interpreter = litert_interpreter(f.read())
    assert interpreter.get_input_details()[0]["dtype"] == numpy_dtype
    assert interpreter.get_output_details()[0]["dtype"] == numpy_dtype
    ops = {op["op_name"] for op in interpreter_ops(interpreter)}
    assert ops >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MAX_POOL_2D", "MEAN", "FULLY_CONNECTED"}
    # No float islands: the only QUANTIZE ops allowed convert the uint8 I/O.
    allowed = {"QUANTIZE"} if io_dtype == "uint8" else set()
    assert "DEQUANTIZE" not in ops and not (ops & {"QUANTIZE"}) - allowed
    float_tensors = [
        t["name"] for t in interpreter.get_tensor_details() if t["dtype"] == np.float32
    ]
    assert not float_tensors


@pytest.mark.parametrize(
    "layer_name,bn_name",
    [("stem", "stem_bn"), ("dw", "dw_bn"), ("pw", "pw_bn"), ("conv2", None), ("logits", None)],
)
def test_int8_weights_are_the_lsq_codes(layer_name, bn_name, exported, qat_models):
    """W4A8: every layer's int8 weights are exactly 15 times its 4-bit LSQ codes
    (full grid -8..7), 1 times its 8-bit codes (first and last layers):
    Conv2D through the FakeQuant, DepthwiseConv2D and Dense written after
    conversion. At most 16 values per channel in the 4-bit layers."""
    with open(exported["w4a8", "int8"], "rb") as f:
        interpreter = litert_interpreter(f.read())
    codes = int8_codes.check_int8_codes(interpreter, qat_models["w4a8"], layer_name, bn_name)
    if layer_name in ("dw", "pw", "conv2"):
        assert len(np.unique(codes)) >= 3  # Not collapsed.


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_conv_depthwise_dense_export_exactly(bits):
    """W4 / W2 on every layer (Conv2D + BN, DepthwiseConv2D with multiplier 2 +
    BN with negative scales, Dense with a bias): int8 weights = k * codes and
    LiteRT reproduces the Keras model."""
    rng = np.random.default_rng(bits)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="conv_bn")(x))
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, use_bias=False, name="dw")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="dw_bn")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    dense = keras.layers.Dense(5, name="dense")
    model = keras.Model(inputs, dense(x))
    for name in ("conv_bn", "dw_bn"):
        bn = model.get_layer(name)
        c = bn.gamma.shape[0]
        bn.set_weights(
            [
                rng.choice([-1.0, 1.0], c) * rng.uniform(0.5, 2, c),
                rng.normal(0, 0.2, c),
                rng.normal(0, 0.2, c),
                rng.uniform(0.5, 2, c),
            ]
        )
    dense.bias.assign(rng.normal(0, 0.3, 5))
    data = rng.random((256, 8, 8, 3)).astype(np.float32)
    recipe = kq.Recipe(weight_bits=bits, activation_bits=8, first_last_bits=None)
    qmodel = kq.quantize_model(model, recipe=recipe, calibration_data=data)
    qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
    for name in ("conv", "dw", "dense"):  # steps that reach -Qn in every channel
        layer = qmodel.get_layer(name)
        kernel = np.asarray(layer.kernel)
        columns = kernel.reshape(-1, int(np.prod(layer.kernel_quantizer_weights["step"].shape)))
        step = -columns.min(0) / qn
        layer.kernel_quantizer_weights["step"].assign(
            step.reshape(layer.kernel_quantizer_weights["step"].shape)
        )
    flatbuffer = kq.export.to_tflite(qmodel, data)
    interpreter = litert_interpreter(flatbuffer)
    for name, bn_name in (("conv", "conv_bn"), ("dw", "dw_bn"), ("dense", None)):
        codes = int8_codes.check_int8_codes(interpreter, qmodel, name, bn_name)
        assert codes.min() == -qn and codes.max() == qp  # the full grid: 2^b levels
    result = kq.export.verify(flatbuffer, qmodel, data, print_report=False)
    assert result.agreement >= 0.98 and result.mean_abs_diff_lsb <= 0.6, result.table()


def test_float_option_runs(qat_models, all_digits, tmp_path):
    x, y = all_digits
    path = str(tmp_path / "float.tflite")
    kq.export.to_tflite(qat_models["w8a8"], None, path, io_dtype="float32", quantize=False)
    result = kq.export.verify(path, qat_models["w8a8"], x[:300], labels=y[:300], print_report=False)
    assert result.agreement >= 0.99
    interpreter = TFLiteRunner(path).interpreter
    assert interpreter.get_input_details()[0]["dtype"] == np.float32


def _tiny(input_shape=(8, 8, 1)):
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3)(x))


def test_dynamic_spatial_shape_needs_input_shape(tmp_path):
    model = _tiny((None, None, 1))
    data = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"unknown dimensions.*input_shape"):
        kq.export.to_tflite(model, data)
    flatbuffer = kq.export.to_tflite(model, data, input_shape=(8, 8, 1))
    runner = TFLiteRunner(flatbuffer)
    assert tuple(runner.input["shape"]) == (1, 8, 8, 1)
    result = kq.export.verify(flatbuffer, model, data, print_report=False)
    assert result.agreement >= 0.9


@pytest.mark.parametrize("kind", ["array", "xy", "batched_dataset", "sample_dataset", "list"])
def test_representative_data_kinds(kind):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.random((12, 8, 8, 1), np.float32)
    y = rng.integers(0, 3, 12)
    data = {
        "array": x,
        "xy": (x, y),
        "batched_dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(4),
        "sample_dataset": tf.data.Dataset.from_tensor_slices(x),
        "list": [x[:6], x[6:]],
    }[kind]
    assert kq.export.representative.representative_array(data, (8, 8, 1)).shape == (12, 8, 8, 1)


@pytest.mark.parametrize(
    "data,match",
    [
        (None, "needs representative_data"),
        (np.zeros((0, 8, 8, 1), np.float32), "is empty"),
        ([], "is empty"),
        (np.zeros((4, 8, 8, 3), np.float32), r"shape \(8, 8, 1\).*\(8, 8, 3\)"),
        (np.zeros((4, 64), np.float32), r"shape \(8, 8, 1\).*\(64,\)"),
        (
            np.where(
                np.arange(4)[:, None, None, None] == 2, np.nan, np.zeros((4, 8, 8, 1), np.float32)
            ),
            r"representative_data holds a non-finite value \(nan\) at sample 2",
        ),
        (np.full((4, 8, 8, 1), np.inf, np.float32), r"\(inf\) at sample 0, element 0; 4 sample"),
    ],
)
def test_bad_representative_data(data, match):
    with pytest.raises(ValueError, match=match):
        kq.export.to_tflite(_tiny(), data)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"io_dtype": "int16"}, "io_dtype must be one of"),
        ({"input_shape": (8, -1, 1)}, "input_shape must be"),
        (
            {"input_shape": "8,8,1"},
            r"input_shape must be a tuple of positive ints.*Received: "
            r"input_shape='8,8,1'",
        ),
        ({"quantize": False, "io_dtype": "int8"}, "float export"),
        ({"num_samples": 0}, r"num_samples must be a positive int.*Received: num_samples=0"),
        ({"num_samples": -5}, r"num_samples must be a positive int.*Received: num_samples=-5"),
    ],
)
def test_bad_arguments(kwargs, match):
    data = np.zeros((4, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=match):
        kq.export.to_tflite(_tiny(), data, **kwargs)


class Sine(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.sin(inputs)


def test_unquantizable_op_names_the_layer():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = Sine(name="sine")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    data = np.random.default_rng(0).random((8, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match=r"Layer 'sine' \(Sine\) cannot be converted"):
        kq.export.to_tflite(model, data)


def test_writes_file(tmp_path):
    path = tmp_path / "m.tflite"
    flatbuffer = kq.export.to_tflite(_tiny(), np.zeros((2, 8, 8, 1), np.float32), str(path))
    assert os.path.getsize(path) == len(flatbuffer) > 0


def test_nested_model_is_flattened_and_exports(digits):
    (x_train, _), _ = digits
    inner_inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inner_inputs)
    h = keras.layers.BatchNormalization()(h)
    backbone = keras.Model(inner_inputs, keras.layers.ReLU()(h), name="backbone")
    head = keras.Sequential(
        [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)], name="head"
    )
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, head(backbone(inputs)))
    qmodel = kq.quantize_model(
        model, weight_bits=8, activation_bits=8, calibration_data=x_train[:64]
    )
    flatbuffer = kq.export.to_tflite(qmodel, x_train[:100])
    result = kq.export.verify(flatbuffer, qmodel, x_train[:300], print_report=False)
    assert result.agreement >= 0.98 and result.mean_abs_diff_lsb < 2
    assert kq.export.check_edgetpu(flatbuffer).compatible


def test_sequential_model_exports():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, use_bias=False),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )
    data = np.random.default_rng(0).random((32, 8, 8, 1), np.float32)
    graph = kq.export.export_model(model)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in graph.layers)
    flatbuffer = kq.export.to_tflite(model, data)
    assert kq.export.verify(flatbuffer, model, data, print_report=False).agreement >= 0.9


def test_missing_directory_is_created_and_the_file_replaced(tmp_path):
    model, data = _tiny(), np.zeros((4, 8, 8, 1), np.float32)
    path = tmp_path / "new" / "dir" / "m.tflite"
    flatbuffer = kq.export.to_tflite(model, data, str(path))
    inode = path.stat().st_ino
    kq.export.to_tflite(model, data, str(path))
    # Replaced, not overwritten in place: a reader that mapped the old file keeps it.
    assert path.stat().st_ino != inode and path.read_bytes() == flatbuffer
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.tflite"]
