"""MultiHeadAttention rewritten into EinsumDense projections and QuantDotProductAttention."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.layers import attention
from kqrobust.testing.numpy_quant import np_quant


def _model(kind, **mha_kwargs):
    rng = np.random.default_rng(0)
    query = keras.Input((6, 8))
    mha = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=4, name="mha", bias_initializer="random_normal", **mha_kwargs
    )
    if kind == "cross":
        value, key = keras.Input((5, 12)), keras.Input((5, 10))
        model = keras.Model([query, value, key], mha(query=query, value=value, key=key))
        shapes = [(3, 6, 8), (3, 5, 12), (3, 5, 10)]
    else:
        model = keras.Model(query, mha(query, query, use_causal_mask=kind == "causal"))
        shapes = [(3, 6, 8)]
    return model, [rng.normal(size=s).astype("float32") for s in shapes]


@pytest.mark.parametrize("kind", ["self", "cross", "causal"])
def test_rewritten_subgraph_equals_multi_head_attention(kind):
    model, x = _model(kind)
    expanded = attention.expand_model(model)
    names = {type(l).__name__: l.name for l in expanded.layers}
    assert not any(isinstance(l, keras.layers.MultiHeadAttention) for l in expanded.layers)
    assert [l.name for l in expanded.layers if isinstance(l, keras.layers.EinsumDense)] == [
        "mha_query",
        "mha_key",
        "mha_value",
        "mha_attention_output",
    ]
    assert names["QuantDotProductAttention"] == "mha_attention"
    layer = expanded.get_layer("mha_attention")
    assert layer.use_causal_mask == (kind == "causal") and not layer.tensor_quantizers()
    for new, old in zip(
        ["mha_query", "mha_key", "mha_value", "mha_attention_output"],
        ["query_dense", "key_dense", "value_dense", "output_dense"],
    ):
        assert expanded.get_layer(new).equation == getattr(model.get_layer("mha"), old).equation
    # Static shapes survive (Keras' EinsumDense alone leaves the sequence length None).
    assert tuple(expanded.outputs[0].shape) == tuple(model.outputs[0].shape) == (None, 6, 8)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(expanded.predict(x, verbose=0), expected, atol=1e-5, rtol=1e-5)
    if kind == "causal":  # the mask matters: without it the outputs differ
        other = attention.expand_model(_model("self")[0])
        other.set_weights(expanded.get_weights())
        assert np.abs(other.predict(x, verbose=0) - expected).max() > 1e-2


@pytest.mark.parametrize(
    "kwargs,option",
    [
        ({"dropout": 0.1}, "dropout=0.1"),
        ({"use_gate": True}, "use_gate=True"),
    ],
)
def test_unsupported_option_stays_float_or_raises_when_strict(kwargs, option):
    float_mha, x = _model("self", **kwargs)
    model = keras.Model(float_mha.inputs, keras.layers.Dense(3)(float_mha.outputs[0]))
    with pytest.warns(UserWarning, match=rf"'mha' stays float.*{option}"):
        qmodel = kq.quantize_model(model, weight_bits=8, activation_bits=8, calibration_data=x)
    assert any(isinstance(l, keras.layers.MultiHeadAttention) for l in qmodel.layers)
    with pytest.raises(ValueError, match=rf"'mha' stays float.*{option}"):
        kq.quantize_model(model, weight_bits=8, activation_bits=8, strict=True)


def test_attention_mask_call_stays_float():
    query = keras.Input((6, 8))
    mask = keras.Input((6, 6), dtype="bool")
    out = keras.layers.MultiHeadAttention(2, 4, name="mha")(query, query, attention_mask=mask)
    model = keras.Model([query, mask], out)
    with pytest.warns(UserWarning, match="attention_mask"):
        expanded = attention.expand_model(model)
    assert any(isinstance(l, keras.layers.MultiHeadAttention) for l in expanded.layers)


def test_quantized_attention_matches_numpy_on_quantized_tensors():
    """softmax(Q(q/sqrt(d)) Q(k)^T) with Q(scores), Q(probs), then Q(v), each on
    its LSQ grid (Esser et al., ICLR 2020); the steps from the first training call,
    the softmax output on TFLite's fixed 8-bit grid of step 1/256."""
    rng = np.random.default_rng(3)
    q, k, v = (rng.normal(size=(2, 5, 2, 4)).astype("float32") for _ in range(3))
    layer = attention.QuantDotProductAttention(
        key_dim=4, activation_quantizer=kq.quantizers.LSQ(bits=4, per_sample=True)
    )
    y = keras.ops.convert_to_numpy(layer([q, k, v], training=True))
    assert layer.uninitialized_quantizers() == []
    step = {n: float(layer.quantizer_weights(n)["step"].numpy()) for n in attention.QUANTIZED}
    qq = np_quant(q / 2.0, step["query"], 4, True, False)
    kk = np_quant(k, step["key"], 4, True, False)
    vv = np_quant(v, step["value"], 4, True, False)
    scores = np_quant(np.einsum("aecd,abcd->acbe", kk, qq), step["scores"], 8, True, False)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    assert step["probs"] == 1.0 / 256.0
    probs = np_quant(probs / probs.sum(-1, keepdims=True), step["probs"], 8, False, False)
    np.testing.assert_allclose(y, np.einsum("acbe,aecd->abcd", probs, vv), atol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer([q, k, v])), y)


def test_quantize_model_quantizes_projections_and_attention():
    model, x = _model("self")
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=6, calibration_data=x)
    kinds = {l.name: type(l).__name__ for l in qmodel.layers}
    assert kinds["mha_query"] == kinds["mha_attention_output"] == "QuantEinsumDense"
    layer = qmodel.get_layer("mha_attention")
    bits = {n: quantizer.bits for n, quantizer in layer.tensor_quantizers().items()}
    assert bits == {"query": 6, "key": 6, "value": 6, "scores": 8, "probs": 8}
    assert not layer.tensor_quantizers()["probs"].signed
    assert (
        np.corrcoef(model.predict(x, verbose=0).ravel(), qmodel.predict(x, verbose=0).ravel())[0, 1]
        > 0.9
    )


def test_calibration_data_initializes_the_attention_quantizers():
    """calibration_data sets the attention's steps once: a training step after it
    keeps them (before, the flags were reset and the first batch set them again)."""
    model, x = _model("self")
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=8, calibration_data=x)
    layer = qmodel.get_layer("mha_attention")
    assert layer.uninitialized_quantizers() == []
    steps = {n: float(layer.quantizer_weights(n)["step"].numpy()) for n in attention.QUANTIZED}
    assert steps["query"] != 1.0 and steps["probs"] == 1.0 / 256.0
    qmodel.compile(keras.optimizers.SGD(0.0), "mse")
    qmodel.train_on_batch(x[0] * 10.0, np.zeros((3, 6, 8), "float32"))
    assert {
        n: float(layer.quantizer_weights(n)["step"].numpy()) for n in attention.QUANTIZED
    } == steps


def test_export_fails_for_attention_that_never_saw_data():
    model, x = _model("self")
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=8)
    for layer in qmodel.layers:  # only the attention waits
        if hasattr(layer, "input_quantizer") and layer.input_quantizer is not None:
            layer.input_quantizer.initialize(
                np.ones((1, 6, 8), "float32"), layer.input_quantizer_weights
            )
    with pytest.raises(ValueError, match="mha_attention/query"):
        kq.layers.check_initialized(qmodel, "export")
