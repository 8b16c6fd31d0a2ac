"""QuantEinsumDense against keras EinsumDense fed NumPy-quantized tensors."""

import keras
import numpy as np
import pytest

from kqrobust import layers as qlayers
from kqrobust import quantizers
from kqrobust.layers import einsum_dense
from kqrobust.testing import TestCase
from kqrobust.testing.numpy_quant import np_quant

EQUATIONS = [
    # (equation, output_shape, bias_axes, input shape, channel axes, matmul form)
    ("ab,bc->ac", 4, "c", (3, 7), -1, True),
    ("abc,cde->abde", (None, 2, 4), "de", (2, 5, 6), (-2, -1), True),
    ("abcd,cde->abe", (None, 8), "e", (2, 5, 2, 4), -1, True),
    ("...b,bc->...c", 3, None, (2, 3, 4, 5), -1, True),
    ("abc,bcd->ad", 4, "d", (3, 5, 6), -1, True),
    ("abc,cd->abd", (None, 4), "d", (2, 5, 6), -1, True),
    ("abc,bd->acd", (None, 4), "d", (3, 5, 6), -1, False),  # b not trailing: einsum
]


@pytest.mark.parametrize("equation,output_shape,bias_axes,shape,axes,matmul", EQUATIONS)
def test_matches_float_einsum_dense_on_quantized_tensors(
    equation, output_shape, bias_axes, shape, axes, matmul
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype("float32")
    kwargs = dict(
        equation=equation,
        output_shape=output_shape,
        bias_axes=bias_axes,
        bias_initializer="random_normal",
    )
    assert einsum_dense.channel_axes(keras.layers.EinsumDense(**kwargs)) == axes
    assert (einsum_dense.matmul_form(equation) is not None) == matmul
    layer = qlayers.QuantEinsumDense(
        **kwargs,
        kernel_quantizer=quantizers.LSQ(bits=4, channel_axis=axes),
        input_quantizer=quantizers.LSQ(bits=4, narrow_range=False, per_sample=True),
    )
    y = keras.ops.convert_to_numpy(layer(x, training=True))  # sets the input step
    assert layer.uninitialized_quantizers() == []
    kernel = layer.kernel.numpy()
    k_step = layer.kernel_quantizer_weights["step"].numpy()
    x_step = layer.input_quantizer_weights["step"].numpy()
    n_out = 1 if isinstance(axes, int) else len(axes)
    assert k_step.shape == kernel.shape[kernel.ndim - n_out :]
    # LSQ's init (Esser et al., ICLR 2020): 2 mean|v| / sqrt(Qp), per output channel.
    np.testing.assert_allclose(
        k_step,
        2 * np.abs(kernel).mean(axis=tuple(range(kernel.ndim - n_out))) / np.sqrt(7),
        rtol=1e-5,
    )
    reference = keras.layers.EinsumDense(**kwargs)
    reference.build(shape)
    reference.set_weights(
        [np_quant(kernel, k_step, 4, True, True)] + ([layer.bias.numpy()] if bias_axes else [])
    )
    expected = keras.ops.convert_to_numpy(reference(np_quant(x, x_step, 4, True, False)))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x)), y)


@pytest.mark.parametrize("equation,output_shape,bias_axes,shape,axes,matmul", EQUATIONS)
def test_without_quantizers_the_layer_is_the_float_layer(
    equation, output_shape, bias_axes, shape, axes, matmul
):
    x = np.random.default_rng(1).normal(size=shape).astype("float32")
    kwargs = dict(equation=equation, output_shape=output_shape, bias_axes=bias_axes)
    layer, reference = qlayers.QuantEinsumDense(**kwargs), keras.layers.EinsumDense(**kwargs)
    layer.build(shape)
    reference.build(shape)
    reference.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), reference(x).numpy(), rtol=1e-6, atol=1e-6)
    assert [v.name for v in layer.weights] == [v.name for v in reference.weights]


@pytest.mark.parametrize(
    "equation,bias_axes,match",
    [
        ("abc,dc->abd", None, r"trailing letters.*kernel 'dc', output letters 'd'"),
        ("abc,cde->abed", None, r"trailing letters.*'abc,cde->abed'"),
        ("abc,cd->abd", "b", r"bias_axes to be None or the kernel's output letters 'd'"),
    ],
)
def test_output_channels_not_trailing_is_a_clear_error(equation, bias_axes, match):
    layer = keras.layers.EinsumDense(
        equation, output_shape=(None, 4, 4)[: equation.count("d") + 1], bias_axes=bias_axes
    )
    with pytest.raises(ValueError, match=match):
        einsum_dense.channel_axes(layer)


class SavingTest(TestCase):
    def test_serialization_and_saving(self):
        layer = qlayers.QuantEinsumDense(
            "abc,cde->abde",
            output_shape=(None, 2, 3),
            bias_axes="de",
            kernel_quantizer=quantizers.LSQ(bits=4, channel_axis=(-2, -1)),
            input_quantizer=quantizers.LSQ(bits=8, per_sample=True),
        )
        revived = self.run_serialization_test(layer)
        self.assertEqual(revived.kernel_quantizer, layer.kernel_quantizer)
        inputs = keras.Input((5, 4))
        model = keras.Model(inputs, layer(inputs))
        x = np.random.default_rng(2).normal(size=(3, 5, 4)).astype("float32")
        model(x, training=True)
        loaded = self.run_model_saving_test(model, x)
        self.assertEqual([v.path for v in loaded.weights], [v.path for v in model.weights])
