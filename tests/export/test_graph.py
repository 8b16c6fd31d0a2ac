"""The export graph: same function as the quantized model, serializable layers."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.layers import FakeQuant
from kqrobust.ops.fake_quant import fake_quant_min_max


def _quantized_tiny():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    bn = model.get_layer("bn")
    rng = np.random.default_rng(0)
    bn.set_weights(
        [rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4), rng.uniform(0.5, 2, 4)]
    )
    x = rng.random((32, 8, 8, 1)).astype(np.float32)
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=8, calibration_data=x)
    return qmodel, x


def test_export_graph_computes_the_quantized_model():
    qmodel, x = _quantized_tiny()
    graph = kq.export.export_model(qmodel)
    assert [type(l).__name__ for l in graph.layers if "conv" in l.name or l.name == "dw"] == [
        "ExportConv2D",
        "ExportDepthwiseConv2D",
    ]
    assert type(graph.get_layer("bn")).__name__ == "FoldedBatchNorm"
    np.testing.assert_allclose(
        graph.predict(x, verbose=0), qmodel.predict(x, verbose=0), rtol=0, atol=2e-5
    )


def test_export_graph_with_representative_data_annotates_every_tensor():
    qmodel, x = _quantized_tiny()
    graph = kq.export.export_model(qmodel, x)
    fake_quants = sorted(l.name for l in graph.layers if isinstance(l, FakeQuant))
    # conv -> bn -> relu fuse: the ReLU output carries the range; gap and the
    # logits get data ranges; dw feeds gap (not fused).
    assert fake_quants == ["dw_fq", "gap_fq", "input_fq", "logits_fq", "relu_fq"]
    assert graph.get_layer("relu_fq").get_config()["min_value"] == 0.0
    # The ReLU output range is the dw layer's learned input range.
    assert graph.get_layer("relu_fq").max_value == pytest.approx(
        graph.get_layer("dw").input_range[1]
    )


def test_export_graph_saves_and_loads(tmp_path):
    qmodel, x = _quantized_tiny()
    graph = kq.export.export_model(qmodel, x)
    path = tmp_path / "graph.keras"
    graph.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), graph.predict(x, verbose=0), rtol=0, atol=0
    )
    # Every kernel keeps its int8 range, the DepthwiseConv2D (4 bits) and
    # Dense (8 bits) ones too: `to_tflite` writes them after conversion.
    for name in ("conv", "dw", "logits"):
        assert graph.get_layer(name).kernel_range is not None
        assert loaded.get_layer(name).kernel_range == graph.get_layer(name).kernel_range


@pytest.mark.parametrize("lo,hi", [(0.0, 2.55), (-1.28, 1.27), (-0.3, 4.1)])
def test_fake_quant_layer_matches_reference(lo, hi):
    x = np.linspace(-2, 5, 301, dtype=np.float32)
    np.testing.assert_array_equal(
        np.asarray(FakeQuant(lo, hi)(x)), np.asarray(fake_quant_min_max(x, lo, hi, 8))
    )
