"""Static Edge TPU report: 8-bit tensors, static shapes, supported ops."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import kqrobust as kq
from kqrobust.export.edgetpu import SUPPORTED_OPS


def _model(activation_layer):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    x = activation_layer(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


DATA = np.random.default_rng(0).random((16, 8, 8, 1), np.float32)


@pytest.mark.parametrize("io_dtype", ["int8", "uint8"])
def test_full_integer_small_cnn_maps_entirely(io_dtype, exported):
    report = kq.export.check_edgetpu(exported["w4a8", io_dtype])
    assert report.compatible, str(report)
    assert report.first_cpu_op is None and not report.tensor_issues
    assert [c.op for c in report.ops if c.op != "QUANTIZE"] == [
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "CONV_2D",
        "ADD",
        "MAX_POOL_2D",
        "CONV_2D",
        "MEAN",
        "FULLY_CONNECTED",
    ]
    assert "every op maps to the Edge TPU" in str(report)


def test_unsupported_op_is_the_first_cpu_op():
    model = _model(keras.layers.LeakyReLU(negative_slope=0.1, name="leaky"))
    report = kq.export.check_edgetpu(kq.export.to_tflite(model, DATA))
    assert not report.compatible
    assert "LEAKY_RELU" not in SUPPORTED_OPS
    assert report.first_cpu_op.op == "LEAKY_RELU"
    assert "not supported" in report.first_cpu_op.reason
    after = [c for c in report.ops if c.index > report.first_cpu_op.index]
    assert after and all(c.device == "cpu" for c in after)
    before = [c for c in report.ops if c.index < report.first_cpu_op.index]
    assert before and all(c.device == "edgetpu" for c in before)
    assert "first op on the CPU: #" in str(report)


def test_float_model_and_dynamic_shapes_are_reported(tmp_path):
    model = _model(keras.layers.ReLU())
    converter = tf.lite.TFLiteConverter.from_keras_model(model)  # float, batch -1
    path = tmp_path / "float.tflite"
    path.write_bytes(converter.convert())
    report = kq.export.check_edgetpu(str(path))
    assert not report.compatible
    issues = "\n".join(report.tensor_issues)
    assert "float32, not int8/uint8" in issues
    assert "dynamic shape [-1, 8, 8, 1]" in issues
    assert report.first_cpu_op.index == 0
    assert "non-8-bit tensor" in report.first_cpu_op.reason


class ChannelMean(keras.layers.Layer):
    def call(self, inputs):
        return keras.ops.mean(inputs, axis=-1, keepdims=True)


def test_mean_over_channels_breaks_a_limit():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = ChannelMean(name="channel_mean")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    report = kq.export.check_edgetpu(kq.export.to_tflite(model, DATA))
    assert report.first_cpu_op.op == "MEAN"
    assert "Mean reduces only along x/y, got axes [3]" in report.first_cpu_op.reason
