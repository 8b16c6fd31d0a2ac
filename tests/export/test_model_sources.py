"""Export parity for every kind of model kqrobust makes, and plain Keras.

SatNL QAT (`quantize_model(recipe="satnl")`), `kq.robustify` (no quantizers,
a weight transform), `kq.ptq.quantize` (FixedRange), the `minmax` recipe
(MinMax quantizers) and a plain float model: each exports to full-integer
TFLite that LiteRT runs with the Keras model's predictions.
"""

import ast
import pathlib

import keras
import numpy as np
import pytest

import kqrobust as kq


def _compile(model):
    model.compile(
        keras.optimizers.Adam(5e-4), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def _check_parity(model, digits, all_digits, tmp_path):
    (x_train, _), _ = digits
    x, y = all_digits
    path = str(tmp_path / "model.tflite")
    kq.export.to_tflite(model, x_train[:200], path)
    result = kq.export.verify(path, model, x, labels=y, print_report=False)
    assert result.agreement >= 0.99, result.table()
    assert abs(result.runtime_accuracy - result.keras_accuracy) <= 0.005, result.table()
    assert kq.export.check_edgetpu(path).compatible
    return result


def _satnl_recipe():
    return kq.configs.PRESETS["satnl"].replace(satnl_alpha=0.3)


def test_satnl_qat_folds_the_transform(float_cnn, digits, all_digits, tmp_path):
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    model = kq.quantize_model(float_cnn, recipe=_satnl_recipe(), weight_bits=4, activation_bits=8)
    _compile(model).fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
    graph = kq.export.export_model(model)
    layer = model.get_layer("logits")
    raw = np.asarray(layer.kernel)
    folded = np.asarray(graph.get_layer("logits").kernel)
    # Stored kernel: Q(0.3 * tanh(W / 0.3)), independent NumPy computation.
    transformed = 0.3 * np.tanh(raw / 0.3)
    step = np.asarray(layer.kernel_quantizer_weights["step"])
    expected = np.round(np.clip(transformed / step, -127, 127)) * step
    np.testing.assert_allclose(folded, expected, rtol=0, atol=1e-6)
    assert np.abs(transformed - raw).max() > 0.05  # The transform matters here.
    _check_parity(model, digits, all_digits, tmp_path)


def test_robustify_model_exports(float_cnn, digits, all_digits, tmp_path):
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    model = kq.robustify(float_cnn, recipe=_satnl_recipe())
    _compile(model).fit(x_train, y_train, batch_size=64, epochs=1, verbose=0)
    layer = model.get_layer("conv2")
    assert layer.kernel_quantizer is None and layer.weight_transform is not None
    graph = kq.export.export_model(model, fake_quant=False)
    np.testing.assert_allclose(
        np.asarray(graph.get_layer("conv2").kernel),
        0.3 * np.tanh(np.asarray(layer.kernel) / 0.3),
        atol=1e-6,
    )
    _check_parity(model, digits, all_digits, tmp_path)


def test_ptq_model_exports(float_cnn, digits, all_digits, tmp_path):
    (x_train, _), _ = digits
    model = kq.ptq.quantize(
        float_cnn, x_train[:256], method="minmax", weight_bits=8, activation_bits=8
    )
    assert type(model.get_layer("conv2").kernel_quantizer).__name__ == "FixedRange"
    _check_parity(model, digits, all_digits, tmp_path)


@pytest.mark.slow
@pytest.mark.ci
def test_float_model_exports(float_cnn, digits, all_digits, tmp_path):
    _check_parity(float_cnn, digits, all_digits, tmp_path)


@pytest.mark.slow
def test_minmax_recipe_model_exports(float_cnn, digits, all_digits, tmp_path):
    (x_train, y_train), _ = digits
    keras.utils.set_random_seed(0)
    model = kq.quantize_model(float_cnn, recipe="minmax", weight_bits=8, activation_bits=8)
    _compile(model).fit(x_train, y_train, batch_size=64, epochs=2, verbose=0)
    _check_parity(model, digits, all_digits, tmp_path)


def test_export_never_imports_training():
    """DESIGN: `export/` never imports `training/`."""
    package = pathlib.Path(kq.export.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n.startswith("kqrobust.training") for n in names), source.name


def test_model_loaded_in_a_new_session_exports(tmp_path):
    """A loaded model keeps its saved op names (`add`) while Keras' name
    counters restart: the LayerNormalization rewrite must not reuse `add`."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.LayerNormalization()(x + 3.0)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    path = str(tmp_path / "model.keras")
    keras.Model(inputs, outputs).save(path)
    keras.backend.clear_session()  # what a new process starts from
    model = keras.models.load_model(path)
    x = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 1)).astype("float32")
    tflite_path = str(tmp_path / "model.tflite")
    kq.export.to_tflite(model, x, tflite_path)
    result = kq.export.verify(tflite_path, model, x, print_report=False)
    assert result.agreement >= 0.95, result.table()
