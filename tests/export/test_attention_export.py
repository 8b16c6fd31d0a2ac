"""A small ViT block (MultiHeadAttention, LayerNormalization, GELU MLP) through full-int8 TFLite."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.runtime import interpreter_ops
from kqrobust.export.tflite import float_ops
from kqrobust.testing.int8_codes import expected_int8_kernel
from kqrobust.testing.int8_codes import tflite_int8_kernel


def vit_block(layer_norm=True, activation="gelu"):
    """8x8x1 -> 2x2 patches -> 16 tokens of 32 -> one pre-norm Transformer block -> 10."""
    norm = keras.layers.LayerNormalization if layer_norm else (lambda name: keras.layers.Identity())
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Reshape((4, 2, 4, 2))(inputs)
    h = keras.layers.Permute((1, 3, 2, 4))(h)
    h = keras.layers.Reshape((16, 4))(h)
    tokens = keras.layers.Dense(32, name="embed")(h)
    h = norm(name="ln1")(tokens)
    h = keras.layers.MultiHeadAttention(num_heads=2, key_dim=16, name="mha")(h, h)
    h = keras.layers.Add()([tokens, h])
    mlp = norm(name="ln2")(h)
    mlp = keras.layers.Dense(64, activation=activation, name="mlp1")(mlp)
    mlp = keras.layers.Dense(32, name="mlp2")(mlp)
    h = keras.layers.Add()([h, mlp])
    h = keras.layers.GlobalAveragePooling1D()(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))


def _compile(model, lr):
    model.compile(
        keras.optimizers.Adam(lr), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )


def _qat(digits, layer_overrides, **block):
    (x, y), _ = digits
    keras.utils.set_random_seed(0)
    model = vit_block(**block)
    _compile(model, 3e-3)
    model.fit(x, y, batch_size=64, epochs=3, verbose=0)
    qmodel = kq.quantize_model(
        model,
        weight_bits=4,
        activation_bits=8,
        calibration_data=x[:256],
        layer_overrides=layer_overrides,
    )
    _compile(qmodel, 5e-4)
    qmodel.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0)
    return qmodel, x


def _agreement(qmodel, x, flatbuffer):
    expected = kq.export.export_model(qmodel, x[:200]).predict(x, verbose=0)
    return float(np.mean(TFLiteRunner(flatbuffer).predict(x).argmax(1) == expected.argmax(1)))


@pytest.fixture(scope="module")
def exported(digits):
    """The block without LayerNormalization and with a ReLU MLP: the attention part.
    The query, key and value projections read one tensor, each with its own
    learned input range: the tensor keeps the first reader's, as in TFLite."""
    qmodel, x = _qat(digits, None, layer_norm=False, activation="relu")
    return qmodel, x, kq.export.to_tflite(qmodel, x[:200])


def test_attention_block_is_int8_and_agrees_with_the_export_graph(exported):
    qmodel, x, flatbuffer = exported
    kinds = {l.name: type(l).__name__ for l in qmodel.layers}
    assert kinds["mha_attention"] == "QuantDotProductAttention"
    assert {kinds[n] for n in ("mha_query", "mha_key", "mha_value", "mha_attention_output")} == {
        "QuantEinsumDense"
    }
    assert not float_ops(flatbuffer)
    ops = {op["op_name"] for op in interpreter_ops(TFLiteRunner(flatbuffer).interpreter)}
    assert {"BATCH_MATMUL", "SOFTMAX", "FULLY_CONNECTED"} <= ops
    assert _agreement(qmodel, x, flatbuffer) >= 0.98


@pytest.mark.parametrize(
    "name", ["embed", "mha_query", "mha_key", "mha_value", "mha_attention_output", "mlp1", "mlp2"]
)
def test_int8_kernels_are_the_qat_codes(exported, name):
    """EinsumDense projections and Dense on 3-D tokens: FULLY_CONNECTED weights are
    exactly 15 times the 4-bit LSQ codes (`embed` is the first layer: 8 bits, 1 x)."""
    qmodel, _, flatbuffer = exported
    interpreter = TFLiteRunner(flatbuffer).interpreter
    np.testing.assert_array_equal(
        tflite_int8_kernel(interpreter, name), expected_int8_kernel(qmodel.get_layer(name))
    )


@pytest.mark.slow  # About 20 s.
def test_full_vit_block_agrees_with_the_export_graph(digits):
    """LayerNormalization as int8 MEAN/SUB/MUL/RSQRT (gamma and beta on the
    converter's constant grid) and a GELU MLP around the attention."""
    qmodel, x = _qat(digits, None)
    flatbuffer = kq.export.to_tflite(qmodel, x[:200])
    assert not float_ops(flatbuffer)
    assert _agreement(qmodel, x, flatbuffer) >= 0.98
