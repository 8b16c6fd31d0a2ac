"""ONNX export through tf2onnx, checked in onnxruntime against the Keras model."""

import collections

import numpy as np
import onnx
import pytest

import kqrobust as kq
from kqrobust.export.runtime import ONNXRunner


@pytest.fixture(scope="module")
def onnx_paths(qat_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, model in qat_models.items():
        paths[name] = str(out / f"{name}.onnx")
        kq.export.to_onnx(model, paths[name])
    return paths


@pytest.mark.parametrize("name", ["w8a8", "w4a8"])
def test_onnxruntime_matches_keras(name, onnx_paths, qat_models, all_digits):
    x, y = all_digits
    result = kq.export.verify(onnx_paths[name], qat_models[name], x, labels=y, print_report=False)
    assert result.runtime == "onnxruntime"
    assert result.agreement >= 0.99, result.table()
    assert abs(result.runtime_accuracy - result.keras_accuracy) <= 0.005, result.table()


@pytest.mark.parametrize("name", ["w8a8", "w4a8"])
def test_qdq_graph_without_optimizations_is_exact(name, onnx_paths, qat_models, all_digits):
    x, _ = all_digits
    expected = qat_models[name].predict(x[:256], verbose=0)
    actual = ONNXRunner(onnx_paths[name], optimize=False).predict(x[:256])
    # The same grid and the same rounding (half to even); an input of QuantizeLinear that lies
    # within float32 rounding of a grid midpoint may still round the other way, and the flip
    # carries to that sample's logits (measured: 1 of 256 samples, after a change of the
    # training trajectory), so a few samples may differ; the others match exactly.
    exact = np.all(np.abs(actual - expected) <= 1e-4, axis=1)
    assert exact.mean() >= 0.99, np.flatnonzero(~exact)


def test_quantize_dequantize_pairs_and_opset(onnx_paths, qat_models):
    proto = onnx.load(onnx_paths["w4a8"])
    counts = collections.Counter(node.op_type for node in proto.graph.node)
    quantized_inputs = sum(
        1
        for layer in qat_models["w4a8"].layers
        if getattr(layer, "input_quantizer", None) is not None
    )
    assert counts["QuantizeLinear"] == counts["DequantizeLinear"] == quantized_inputs
    assert "BatchNormalization" not in counts  # Folded.
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}


def test_float_model_has_no_qdq(float_cnn, all_digits, tmp_path):
    x, _ = all_digits
    path = str(tmp_path / "float.onnx")
    proto = kq.export.to_onnx(float_cnn, path)
    assert "QuantizeLinear" not in {node.op_type for node in proto.graph.node}
    np.testing.assert_allclose(
        ONNXRunner(path).predict(x[:64]), float_cnn.predict(x[:64], verbose=0), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("opset", [12, "17", True])
def test_bad_opset(opset, float_cnn):
    with pytest.raises(ValueError, match="opset must be an int >= 13"):
        kq.export.to_onnx(float_cnn, opset=opset)


def test_bad_input_shape(float_cnn):
    with pytest.raises(
        ValueError,
        match=r"input_shape must be a tuple of positive ints.*"
        r"Received: input_shape='8,8,1'.*Fix",
    ):
        kq.export.to_onnx(float_cnn, input_shape="8,8,1")


def test_missing_directory_is_created_and_the_file_replaced(float_cnn, tmp_path):
    path = tmp_path / "new" / "dir" / "m.onnx"
    kq.export.to_onnx(float_cnn, str(path))
    inode = path.stat().st_ino
    kq.export.to_onnx(float_cnn, str(path))
    assert path.stat().st_ino != inode  # replaced, not overwritten in place
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.onnx"]
