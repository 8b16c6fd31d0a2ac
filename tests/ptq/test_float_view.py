"""float_view: plain Keras layers with the effective float weights."""

import keras
import numpy as np

import kqrobust as kq
from kqrobust import layers as qlayers
from kqrobust.ptq.float_view import float_view
from kqrobust.testing import TestCase
from kqrobust.testing import small_cnn

X = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")


def transformed_model():
    """A float QuantModel as kq.robustify builds it: no quantizers, a weight transform."""
    inputs = keras.Input((8, 8, 1))
    x = qlayers.QuantConv2D(4, 3, name="conv", weight_transform=keras.activations.tanh)(inputs)
    x = keras.layers.ReLU()(x)
    x = qlayers.QuantDepthwiseConv2D(
        3, name="dw", use_bias=False, weight_transform=keras.activations.tanh
    )(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = qlayers.QuantDense(3, name="head")(x)
    model = kq.training.QuantModel(inputs, outputs)
    for layer in model.layers:
        if isinstance(layer, qlayers.QuantizeMixin):
            layer.kernel.assign(layer.kernel * 4.0)  # so tanh saturates visibly
    return model


class FloatViewTest(TestCase):
    def test_plain_model_is_copied(self):
        model = small_cnn()
        view = float_view(model)
        self.assertNotIsInstance(view, kq.training.QuantModel)
        names = [layer.name for layer in model.layers]
        self.assertEqual([layer.name for layer in view.layers], names)
        self.assertAllClose(view.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)
        self.assertFalse({id(v) for v in view.weights} & {id(v) for v in model.weights})

    def test_transform_is_folded_and_hooks_dropped(self):
        model = transformed_model()
        view = float_view(model)
        conv = view.get_layer("conv")
        self.assertIs(type(conv), keras.layers.Conv2D)
        self.assertIs(type(view.get_layer("dw")), keras.layers.DepthwiseConv2D)
        self.assertIs(type(view.get_layer("head")), keras.layers.Dense)
        self.assertAllClose(conv.kernel, np.tanh(np.asarray(model.get_layer("conv").kernel)))
        self.assertAllClose(view.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-5)

    def test_fake_quant_is_dropped(self):
        model = small_cnn()
        qmodel = kq.quantize_model(
            model, recipe="lsq", weight_bits=2, activation_bits=2, calibration_data=X
        )
        view = float_view(qmodel)
        self.assertAllClose(view.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-5)
        self.assertGreater(
            np.abs(qmodel.predict(X, verbose=0) - model.predict(X, verbose=0)).max(), 1e-2
        )

    def test_add_bias_gives_zero_biases(self):
        model = small_cnn()
        view = float_view(model, add_bias=True)
        for name in ("stem", "dw", "pw"):
            self.assertFalse(model.get_layer(name).use_bias)
            self.assertTrue(view.get_layer(name).use_bias)
            self.assertAllClose(view.get_layer(name).bias, 0.0)
        self.assertAllClose(view.predict(X, verbose=0), model.predict(X, verbose=0), atol=1e-6)

    def test_rejects_subclassed_models(self):
        class Sub(keras.Model):
            def call(self, x):
                return x

        with self.assertRaisesRegex(ValueError, "float_view supports Sequential and Functional"):
            float_view(Sub())

    def test_model_subclass_with_its_own_constructor(self):
        class WithRho(keras.Model):  # as a robust-training model class could be
            def __init__(self, inputs, outputs, rho, **kwargs):
                super().__init__(inputs, outputs, **kwargs)
                self.rho = rho

        base = small_cnn()
        model = WithRho(base.inputs, base.outputs, rho=0.5)
        view = float_view(model)
        self.assertNotIsInstance(view, WithRho)
        self.assertAllClose(view.predict(X, verbose=0), base.predict(X, verbose=0), atol=1e-6)
