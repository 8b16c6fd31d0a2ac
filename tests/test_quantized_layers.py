"""Which layers are kqrobust layers, and which of them quantize."""

import keras
import numpy as np

import kqrobust as kq
from kqrobust.quantized_layers import kqrobust_layers
from kqrobust.quantized_layers import quantized_layers


def test_quantized_layers_leave_out_float_ones_and_keep_graph_order():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(5, activation="relu", name="a")(inputs)
    x = keras.layers.Dense(4, activation="relu", name="b")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="c")(x))
    data = np.random.default_rng(0).normal(size=(8, 6)).astype("float32")
    qmodel = kq.quantize_model(
        model,
        weight_bits=4,
        activation_bits=8,
        calibration_data=data,
        layer_overrides={"b": {"skip": True}},
    )
    assert [layer.name for layer in quantized_layers(qmodel)] == ["a", "c"]
    assert {layer.name for layer in kqrobust_layers(qmodel)} >= {"a", "c"}
    assert all(layer.kernel_quantizer is not None for layer in quantized_layers(qmodel))
