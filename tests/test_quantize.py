"""quantize_model: model kinds, planning rules, errors, saving and training."""

import contextlib
import io
import os
import re
import warnings

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import layers as qlayers
from kqrobust import model_graph
from kqrobust.quantized_layers import input_quantizer_holders
from kqrobust.testing import TestCase
from kqrobust.testing import small_cnn


def quantized_layers(model):
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += quantized_layers(layer)
        elif isinstance(layer, qlayers.QuantizeMixin):
            found.append(layer)
    return found


class QuantizeModelTest(TestCase):
    def test_functional_residual_model(self):
        model = small_cnn()
        qmodel = kq.quantize_model(model, recipe="lsq", weight_bits=4, activation_bits=4)
        self.assertIsInstance(qmodel, kq.training.QuantModel)
        qls = {l.name: l for l in quantized_layers(qmodel)}
        self.assertEqual(list(qls), ["stem", "dw", "pw", "conv2", "logits"])
        self.assertIsInstance(qls["dw"], qlayers.QuantDepthwiseConv2D)
        # First and last quantized layers at 8 bits, the rest at 4. The stem's ReLU, which dw
        # and the residual Add read, has one quantizer: dw's, moved onto the tensor.
        inputs = input_quantizer_holders(qmodel)
        self.assertIsNone(qls["dw"].input_quantizer)
        self.assertEqual(inputs["dw"].name, "stem_relu_quant")
        bits = {
            n: (l.kernel_quantizer.bits, inputs[n].input_quantizer.bits) for n, l in qls.items()
        }
        self.assertEqual(
            bits, {"stem": (8, 8), "dw": (4, 4), "pw": (4, 4), "conv2": (4, 4), "logits": (8, 8)}
        )
        # Inputs after ReLU (through pooling/Add) are unsigned; the image input is signed.
        signed = {n: inputs[n].input_quantizer.signed for n in qls}
        self.assertEqual(
            signed, {"stem": True, "dw": False, "pw": False, "conv2": False, "logits": False}
        )
        # Float weights copied; quantizer variables added; BN copied.
        for name in ("stem", "dw", "pw", "conv2", "logits"):
            self.assertAllClose(qls[name].kernel, model.get_layer(name).kernel)
        self.assertAllClose(
            qmodel.get_layer("stem_bn").moving_variance, model.get_layer("stem_bn").moving_variance
        )

    def test_teacher_is_a_frozen_untracked_copy(self):
        model = small_cnn()
        qmodel = kq.quantize_model(model)
        self.assertIsNot(qmodel.teacher, model)
        self.assertFalse(qmodel.teacher.trainable)
        x = np.random.default_rng(0).random((4, 8, 8, 1)).astype("float32")
        self.assertAllClose(qmodel.teacher.predict(x, verbose=0), model.predict(x, verbose=0))
        teacher_ids = {id(v) for v in qmodel.teacher.weights}
        self.assertFalse(teacher_ids & {id(v) for v in qmodel.weights})

    def test_sequential_and_nested_models(self):
        inner = keras.Sequential(
            [keras.Input((8,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(8)],
            name="inner",
        )
        inputs = keras.Input((4,))
        x = keras.layers.Dense(8, activation="relu", name="first")(inputs)
        outputs = keras.layers.Dense(3, name="head")(inner(x))
        nested = keras.Model(inputs, outputs)
        x = np.random.default_rng(1).random((5, 4)).astype("float32")
        qmodel = kq.quantize_model(nested, weight_bits=3, activation_bits=3, calibration_data=x)
        self.assertEqual(len(quantized_layers(qmodel)), 4)
        self.assertEqual(qmodel.predict(x, verbose=0).shape, (5, 3))

        seq = keras.Sequential(
            [
                keras.Input((6,)),
                keras.layers.Dense(5, activation="relu"),
                keras.layers.Dropout(0.1),
                keras.layers.Dense(2),
            ]
        )
        qseq = kq.quantize_model(seq, weight_bits=2, activation_bits=2)
        self.assertEqual(
            [type(l).__name__ for l in quantized_layers(qseq)], ["QuantDense", "QuantDense"]
        )

    def test_layer_overrides(self):
        qmodel = kq.quantize_model(
            small_cnn(),
            weight_bits=4,
            activation_bits=4,
            layer_overrides={
                "dw": {"weight_bits": 8},
                "p.*": {"activation_bits": 6},
                "conv2": {"skip": True},
            },
        )
        qls = {l.name: l for l in quantized_layers(qmodel)}
        self.assertEqual(qls["dw"].kernel_quantizer.bits, 8)
        self.assertEqual(qls["pw"].input_quantizer.bits, 6)
        self.assertNotIn("conv2", qls)
        self.assertIs(type(qmodel.get_layer("conv2")), keras.layers.Conv2D)
        with self.assertRaisesRegex(ValueError, "'nothere' matches no quantizable layer"):
            kq.quantize_model(small_cnn(), layer_overrides={"nothere": {"weight_bits": 8}})

    def test_save_and_load_give_identical_predictions(self):
        x = np.random.default_rng(2).random((16, 8, 8, 1)).astype("float32")
        qmodel = kq.quantize_model(
            small_cnn(), weight_bits=4, activation_bits=4, calibration_data=x
        )
        loaded = self.run_model_saving_test(qmodel, x)
        self.assertEqual(loaded.recipe, qmodel.recipe)
        self.assertIsNone(loaded.teacher)

    def test_bad_inputs_raise_clear_errors(self):
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.dense = keras.layers.Dense(2)

            def call(self, x):
                return self.dense(x)

        sub = Sub()
        sub(np.zeros((1, 3), "float32"))
        with self.assertRaisesRegex(ValueError, "subclassed model of type 'Sub'. Fix: rebuild"):
            kq.quantize_model(sub)
        with self.assertRaisesRegex(
            ValueError, re.escape("weight_bits must be an int in [2, 8]. Received: weight_bits=1")
        ):
            kq.quantize_model(small_cnn(), weight_bits=1)
        with self.assertRaisesRegex(
            ValueError,
            re.escape("activation_bits must be an int in [2, 8]. Received: activation_bits=4.0"),
        ):
            kq.quantize_model(small_cnn(), activation_bits=4.0)
        with self.assertRaisesRegex(ValueError, "Unknown recipe: 'nope'. Presets:"):
            kq.quantize_model(small_cnn(), recipe="nope")
        with self.assertRaisesRegex(ValueError, "unbuilt Sequential"):
            kq.quantize_model(keras.Sequential([keras.layers.Dense(2)]))

    def test_unsupported_layers_warn_or_raise(self):
        inputs = keras.Input((10, 3))
        x = keras.layers.GRU(4, return_sequences=True, name="gru")(inputs)
        x = keras.layers.LSTM(4, name="lstm")(x)
        model = keras.Model(inputs, keras.layers.Dense(2)(x))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            qmodel = kq.quantize_model(model)
        messages = [str(w.message) for w in caught if "not supported" in str(w.message)]
        self.assertEqual(len(messages), 1)
        self.assertIn("'gru' (GRU)", messages[0])
        self.assertIn("'lstm' (LSTM)", messages[0])
        self.assertEqual(len(quantized_layers(qmodel)), 1)
        with self.assertRaisesRegex(ValueError, "Unsupported layers with weights: 'gru'"):
            kq.quantize_model(model, strict=True)
        rows = {row.name: row for row in qmodel.quantization_summary()}
        self.assertIn("NOT QUANTIZED: LSTM", rows["lstm"].note)
        self.assertFalse(rows["gru"].quantized)

    def test_summary_rows_and_verbose_output(self):
        model = small_cnn()
        x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            qmodel = kq.quantize_model(
                model,
                weight_bits=4,
                activation_bits=4,
                calibration_data=x,
                verbose=1,
                layer_overrides={"pw": {"skip": True}},
            )
        rows = {row.name: row for row in qmodel.quantization_summary()}
        self.assertEqual(len(rows), len(list(model_graph.flat_layers(qmodel))))
        # First and last layers at the recipe's first_last_bits (8), the others as asked.
        self.assertEqual((rows["stem"].weight_bits, rows["stem"].activation_bits), (8, 8))
        self.assertEqual((rows["dw"].weight_bits, rows["dw"].activation_bits), (4, 4))
        self.assertEqual((rows["logits"].weight_bits, rows["logits"].activation_bits), (8, 8))
        self.assertFalse(rows["pw"].quantized)
        self.assertIn("layer_overrides", rows["pw"].note)
        self.assertIn("folded", rows["stem_bn"].note)
        text = stdout.getvalue()
        self.assertIn("4 of 5 kernel layers quantized", text)
        self.assertRegex(text, r"dw\s+QuantDepthwiseConv2D\s+4-bit\s+4-bit")
        # The same rows after a .keras round trip.
        path = os.path.join(self.tmp_dir, "q.keras")
        qmodel.save(path)
        self.assertEqual(
            keras.models.load_model(path).quantization_summary(), qmodel.quantization_summary()
        )


@pytest.mark.parametrize(
    "app", ["MobileNetV3Small", "MobileNetV2", pytest.param("ResNet50V2", marks=pytest.mark.slow)]
)
def test_keras_applications(app):
    model = getattr(keras.applications, app)(weights=None, input_shape=(32, 32, 3), classes=10)
    x = np.random.default_rng(3).random((2, 32, 32, 3)).astype("float32")
    qmodel = kq.quantize_model(model, weight_bits=4, activation_bits=4, calibration_data=x)
    n_float = sum(
        type(l) in (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
        for l in model.layers
    )
    assert len(quantized_layers(qmodel)) == n_float
    # Every tensor the int8 file quantizes has a QAT quantizer (kq.tensor_coverage), the
    # hard-swish's `x + 3` included, but for a preprocessing model's raw input and the
    # logits inside Dense(activation="softmax") (the export splits the softmax out).
    calibrated = kq.export.graph.calibrated_tensors(qmodel)[0]
    assert set(calibrated) <= {kq.export.tensors.INPUT, "predictions"}, calibrated
    y = qmodel.predict(x, verbose=0)
    assert y.shape == (2, 10) and np.isfinite(y).all()


def _fit_digits(digits, weight_bits, activation_bits, epochs):
    (x_train, y_train), (x_test, y_test) = digits
    model = small_cnn()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=8, batch_size=64, verbose=0)
    qmodel = kq.quantize_model(model, weight_bits=weight_bits, activation_bits=activation_bits)
    qmodel.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = qmodel.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return qmodel, history, qmodel.evaluate(x_test, y_test, verbose=0, return_dict=True)


def test_w4a4_fit_on_digits_ends_far_above_chance(digits):
    qmodel, history, result = _fit_digits(digits, 4, 4, epochs=4)
    assert history.history["loss"][-1] > 0  # the loss tracker is updated
    assert result["accuracy"] > 0.8, result


def test_w2a2_fit_stays_finite(digits):
    qmodel, history, result = _fit_digits(digits, 2, 2, epochs=2)
    assert np.isfinite(history.history["loss"]).all()
    assert all(np.isfinite(v.numpy()).all() for v in qmodel.weights)
    steps = [v.numpy() for v in qmodel.weights if v.name.endswith("_step")]
    assert steps and all((s > 0).all() for s in steps)
    assert result["accuracy"] > 0.2, result
