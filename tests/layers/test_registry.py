"""The contract every registered layer type keeps, run on each of them.

Build and call, a `.keras` round trip, one QAT step, PTQ calibration and a
full-int8 TFLite export checked in LiteRT against the export graph in Keras.
Layer types with a rewrite rule (`kq.layers.rewrites`: SeparableConv,
MultiHeadAttention) go through the same steps, as the registered layers they
become.
"""

import os

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.export.tflite import float_ops
from kqrobust.layers import registry
from kqrobust.layers import rewrites
from kqrobust.testing.layer_examples import EXAMPLES

TYPES = {t.keras_class.__name__: t for t in registry.layer_types()}
# Output steps LiteRT may differ by: LiteRT's int8 BATCH_MATMUL requantizes with
# two roundings (a fixed-point high multiply, then a rounding shift), so a score
# just below a half step can round up one step, which the softmax then spreads
# over a few output steps (measured: every output within one step, 5 seeds).
LITERT_STEPS = {"MultiHeadAttention": 8}
KNOWN_GAPS = {}
REWRITTEN = {cls.__name__: cls for cls in rewrites.rewritten_classes()}
# Every class the contract runs on: the registered types and the rewritten ones.
CLASSES = {**{n: t.keras_class for n, t in TYPES.items()}, **REWRITTEN}


def _model(keras_class):
    make, shape, *call = EXAMPLES[keras_class]
    call = call[0] if call else (lambda layer, x: layer(x))
    inputs = keras.Input(shape)
    return keras.Model(inputs, call(make(), inputs)), shape


def _quantized_layers(model):
    """The registered-type layers of `model`; each must be of its quantized class."""
    layers = [layer for layer in model.layers if registry.layer_type_of(layer)]
    assert layers and all(
        type(layer) is registry.layer_type_of(layer).quant_class for layer in layers
    ), [type(layer).__name__ for layer in layers]
    return layers


def _data(shape, n=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n,) + shape).astype(np.float32)


def _quantized(keras_class):
    model, shape = _model(keras_class)
    x = _data(shape)
    recipe = kq.configs.get_recipe("lsq").replace(first_last_bits=None)
    qmodel = kq.quantize_model(model, recipe, weight_bits=4, activation_bits=8, calibration_data=x)
    return model, qmodel, x


def test_every_registered_type_has_an_example():
    assert TYPES and set(CLASSES.values()) <= set(EXAMPLES)


@pytest.mark.parametrize("name", sorted(TYPES))
def test_entry_is_consistent(name):
    layer_type = TYPES[name]
    assert issubclass(layer_type.quant_class, layer_type.keras_class)
    assert issubclass(layer_type.export_class, layer_type.keras_class)
    for cls in (layer_type.keras_class, layer_type.quant_class, layer_type.export_class):
        assert registry.layer_type_of(cls.__new__(cls)) is layer_type
    with pytest.raises(ValueError, match="registered already"):
        registry.register_layer_type(layer_type)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_build_call_and_keras_round_trip(name, tmp_path):
    model, qmodel, x = _quantized(CLASSES[name])
    quantized = _quantized_layers(qmodel)
    assert all(not layer.uninitialized_quantizers() for layer in quantized)
    # With the float weights on the 4-bit grid, the quantized layer is close to the float one.
    expected, actual = model.predict(x, verbose=0), qmodel.predict(x, verbose=0)
    assert np.isfinite(actual).all()
    assert np.corrcoef(expected.ravel(), actual.ravel())[0, 1] > 0.9
    path = os.path.join(tmp_path, "model.keras")
    qmodel.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), actual)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_one_qat_step_moves_kernel_and_steps(name):
    _, qmodel, x = _quantized(CLASSES[name])
    layer = _quantized_layers(qmodel)[0]
    before = [
        np.array(v)
        for v in (
            layer.kernel,
            layer.kernel_quantizer_weights["step"],
            layer.input_quantizer_weights["step"],
        )
    ]
    target = (
        np.random.default_rng(1)
        .normal(size=qmodel.predict(x[:1], verbose=0).shape[1:])
        .astype(np.float32)
    )
    qmodel.compile(keras.optimizers.SGD(0.1), "mse")
    qmodel.train_on_batch(x, np.broadcast_to(target, (len(x),) + target.shape))
    after = [
        np.array(v)
        for v in (
            layer.kernel,
            layer.kernel_quantizer_weights["step"],
            layer.input_quantizer_weights["step"],
        )
    ]
    for old, new in zip(before, after):
        assert np.isfinite(new).all() and not np.array_equal(old, new)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_ptq_calibration(name):
    model, shape = _model(CLASSES[name])
    x = _data(shape)
    pmodel = kq.ptq.quantize(
        model, x, method="mse", weight_bits=4, activation_bits=8, first_last_bits=None
    )
    _quantized_layers(pmodel)
    expected, actual = model.predict(x, verbose=0), pmodel.predict(x, verbose=0)
    assert np.corrcoef(expected.ravel(), actual.ravel())[0, 1] > 0.95


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_full_int8_tflite_matches_export_graph(name):
    _, qmodel, x = _quantized(CLASSES[name])
    flatbuffer = kq.export.to_tflite(qmodel, x)
    assert not float_ops(flatbuffer)
    runner = TFLiteRunner(flatbuffer)
    graph = kq.export.export_model(qmodel, x)
    expected = graph.predict(x, verbose=0)
    actual = runner.predict(x)
    steps = np.abs(actual - expected) / runner.output_scale
    # Up to one output step (float32 rounding ties between Keras and LiteRT).
    if name in KNOWN_GAPS and np.mean(steps <= 1.01) < 0.99:
        pytest.xfail(f"{np.mean(steps <= 1.01):.3f} of outputs within one step; {KNOWN_GAPS[name]}")
    assert np.mean(steps <= 1.01) >= 0.99, np.mean(steps <= 1.01)
    assert steps.max() <= LITERT_STEPS.get(name, 1) + 0.01, steps.max()
