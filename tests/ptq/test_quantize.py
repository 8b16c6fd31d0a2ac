"""kq.ptq.quantize: the model it builds, its steps against NumPy, overrides, errors, saving."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import ptq
from kqrobust.ptq.aciq import optimal_clip_multiplier
from kqrobust.quantized_layers import input_quantizer_holders
from kqrobust.quantizers import FixedRange
from kqrobust.testing import TestCase

LAPLACE_K = {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89}
GAUSS_K = {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92}


def levels(bits, signed, narrow):
    """LSQ's grid: signed [-2^(b-1), 2^(b-1) - 1]; narrow range drops -128 at 8 bits."""
    if not signed:
        return 0, 2**bits - 1
    qp = 2 ** (bits - 1) - 1
    return (qp if narrow and bits == 8 else qp + 1), qp


def numpy_step(rule, column, bits, signed, narrow):
    """Min-max, ACIQ (Banner et al., NeurIPS 2019) or MSE search for one column,
    written out independently."""
    qn, qp = levels(bits, signed, narrow)
    top = max(column.max() / qp, -column.min() / qn if qn else 0.0)
    if rule == "minmax":
        return top
    if rule in ("aciq_laplace", "aciq_gauss"):
        laplace = rule == "aciq_laplace"
        table = LAPLACE_K if laplace else GAUSS_K
        spread = np.mean(np.abs(column - column.mean())) if laplace else column.std()
        effective = bits if signed else bits + 1  # unsigned: one more bit (test_aciq)
        k = table.get(effective) or optimal_clip_multiplier(effective, rule[5:])
        alpha = abs(column.mean()) + k * spread
        # Banner et al.'s step: the clip range split into the grid's levels.
        step = (2 * alpha if signed else alpha) / (qn + qp + 1)
        return min(step, top)
    candidates = top * np.arange(1, 101) / 100
    errors = [
        np.sum((column - np.clip(np.round(column / s), -qn, qp) * s) ** 2) for s in candidates
    ]
    return candidates[int(np.argmin(errors))]


def quant_layers(model):
    return {
        layer.name: layer for layer in model.layers if isinstance(layer, kq.layers.QuantizeMixin)
    }


@pytest.fixture
def calib(digits):
    return digits[0][0][:128]


@pytest.mark.parametrize("method", ["minmax", "aciq_laplace", "aciq_gauss", "mse"])
def test_steps_follow_the_range_rule(trained_cnn, calib, method):
    qmodel = ptq.quantize(trained_cnn, calib, method=method, weight_bits=4, activation_bits=3)
    assert isinstance(qmodel, kq.training.QuantModel)
    assert qmodel.recipe.name == f"ptq_{method}"
    layers = quant_layers(qmodel)
    assert list(layers) == ["stem", "dw", "pw", "conv2", "logits"]
    # dw's input, the stem's ReLU that the residual Add reads too, has one quantizer.
    inputs = input_quantizer_holders(qmodel)
    assert inputs["dw"].name == "stem_relu_quant"
    for name, layer in layers.items():
        for tensor in ("kernel", "input"):
            holder = layer if tensor == "kernel" else inputs[name]
            quantizer = getattr(holder, f"{tensor}_quantizer")
            weights = getattr(holder, f"{tensor}_quantizer_weights")
            assert isinstance(quantizer, FixedRange)
            assert float(weights["initialized"]) == 1.0
            if tensor == "kernel":
                values = np.asarray(trained_cnn.get_layer(name).kernel, "float64")
                step_shape = tuple(weights["step"].shape)
                columns = values.reshape(-1, int(np.prod(step_shape)))
            else:
                source = trained_cnn.get_layer(name)
                probe = keras.Model(trained_cnn.inputs, source.input)
                columns = np.asarray(probe.predict(calib, verbose=0), "float64").reshape(-1, 1)
            expected = [
                numpy_step(
                    method, columns[:, c], quantizer.bits, quantizer.signed, quantizer.narrow_range
                )
                for c in range(columns.shape[1])
            ]
            np.testing.assert_allclose(
                np.asarray(weights["step"]).ravel(), expected, rtol=2e-5, err_msg=f"{name} {tensor}"
            )
    bits = {n: (q.kernel_quantizer.bits, inputs[n].input_quantizer.bits) for n, q in layers.items()}
    assert bits == {"stem": (8, 8), "dw": (4, 3), "pw": (4, 3), "conv2": (4, 3), "logits": (8, 8)}


def test_float_activations_and_mixed_precision(trained_cnn):
    qmodel = ptq.quantize(
        trained_cnn,
        None,
        method="aciq",
        weight_bits=3,
        activation_bits=None,
        layer_overrides={"dw": {"weight_bits": 8}},
        first_last_bits=None,
    )
    layers = quant_layers(qmodel)
    assert all(layer.input_quantizer is None for layer in layers.values())
    bits = {n: layer.kernel_quantizer.bits for n, layer in layers.items()}
    assert bits == {"stem": 3, "dw": 8, "pw": 3, "conv2": 3, "logits": 3}
    assert qmodel.recipe.name == "ptq_aciq_laplace"


def test_eight_bit_weights_keep_the_accuracy(trained_cnn, digits, calib):
    _, (x_test, y_test) = digits
    reference = np.argmax(trained_cnn.predict(x_test, verbose=0), -1)
    qmodel = ptq.quantize(trained_cnn, calib, method="minmax", weight_bits=8, activation_bits=8)
    agreement = np.mean(np.argmax(qmodel.predict(x_test, verbose=0), -1) == reference)
    assert agreement > 0.98


def test_predictions_match_a_numpy_fake_quant_of_the_weights(trained_cnn):
    """Weight-only PTQ computes exactly with round(clip(W/s)) * s."""
    qmodel = ptq.quantize(trained_cnn, None, method="mse", weight_bits=3, activation_bits=None)
    manual = keras.models.clone_model(trained_cnn)
    manual.set_weights(trained_cnn.get_weights())
    for name, layer in quant_layers(qmodel).items():
        q = layer.kernel_quantizer
        step = np.asarray(layer.kernel_quantizer_weights["step"])
        kernel = np.asarray(trained_cnn.get_layer(name).kernel)
        qn, qp = levels(q.bits, True, True)
        manual.get_layer(name).kernel.assign(np.clip(np.round(kernel / step), -qn, qp) * step)
    x = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(
        qmodel.predict(x, verbose=0), manual.predict(x, verbose=0), atol=1e-5
    )


def test_two_bit_weights_have_four_levels(trained_cnn):
    """2-bit PTQ weights use LSQ's full grid {-2, -1, 0, 1}, not a ternary one."""
    qmodel = ptq.quantize(
        trained_cnn, None, method="aciq", weight_bits=2, activation_bits=None, first_last_bits=None
    )
    for name, layer in quant_layers(qmodel).items():
        step = np.asarray(layer.kernel_quantizer_weights["step"])
        codes = np.asarray(layer.quantized_kernel()) / step
        np.testing.assert_allclose(codes, np.round(codes), atol=1e-4)
        assert set(np.unique(np.round(codes)).astype(int)) == {-2, -1, 0, 1}, name


def test_accepts_a_robustified_style_model(calib):
    """Quantizer-free QuantX layers with a weight transform (kq.robustify's output)."""
    inputs = keras.Input((8, 8, 1))
    x = kq.layers.QuantConv2D(
        8, 3, activation="relu", name="conv", weight_transform=keras.activations.tanh
    )(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = kq.layers.QuantDense(10, name="head", weight_transform=keras.activations.tanh)(x)
    robust = kq.training.QuantModel(inputs, outputs)
    qmodel = ptq.quantize(
        robust, calib, method="aciq_gauss", weight_bits=4, activation_bits=4, first_last_bits=None
    )
    conv = qmodel.get_layer("conv")
    np.testing.assert_allclose(
        conv.kernel, np.tanh(np.asarray(robust.get_layer("conv").kernel)), atol=1e-6
    )
    assert conv.weight_transform is None and conv.kernel_quantizer.bits == 4


class SavingTest(TestCase):
    def test_ptq_model_saves_and_loads(self):
        from kqrobust.datasets import load_digits
        from kqrobust.testing import small_cnn

        x = load_digits()[0][0][:64]
        qmodel = ptq.quantize(
            small_cnn(), x, method="aciq", weight_bits=4, activation_bits=4, bias_correction=True
        )
        loaded = self.run_model_saving_test(qmodel, x[:8])
        self.assertEqual(loaded.recipe, qmodel.recipe)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"calibration_data": np.zeros((0, 8, 8, 1), "float32")}, "calibration_data is empty"),
        ({"calibration_data": []}, "calibration_data is empty"),
        (
            {"calibration_data": np.zeros((4, 9, 9, 1), "float32")},
            r"does not fit the model: each sample must have shape \(8, 8, 1\)",
        ),
        ({"calibration_data": np.zeros((4, 64), "float32")}, "does not fit the model"),
        ({"calibration_data": None}, "calibration_data is required"),
        ({"weight_bits": 1}, r"weight_bits must be an int in \[2, 8\]. Received: weight_bits=1"),
        ({"weight_bits": 9}, "weight_bits must be an int in"),
        ({"activation_bits": 0}, "activation_bits must be an int in"),
        ({"batch_size": 0}, r"batch_size must be a positive int. Received: batch_size=0. Fix"),
        ({"batch_size": -1}, r"batch_size must be a positive int. Received: batch_size=-1"),
        (
            {"layer_overrides": [("head", {"skip": True})]},
            r"layer_overrides must be a dict. Received: layer_overrides of type list"
            r".*Fix: pass a dict",
        ),
        (
            {
                "calibration_data": np.where(
                    np.arange(4)[:, None, None, None] == 2,
                    np.nan,
                    np.zeros((4, 8, 8, 1), "float32"),
                )
            },
            r"calibration_data holds a non-finite value \(nan\) at sample 2",
        ),
        (
            {
                "calibration_data": [
                    np.zeros((4, 8, 8, 1), "float32"),
                    np.full((4, 8, 8, 1), np.inf, "float32"),
                ]
            },
            r"calibration_data holds a non-finite value \(inf\) at batch 1, "
            r"sample 0 within the batch",
        ),
        (
            {"method": "gptq"},
            r"Unknown PTQ method: 'gptq'. Methods: \['aciq_gauss', 'aciq_laplace', "
            r"'adaquant', 'minmax', 'mse', 'qdrop'\]",
        ),
    ],
)
def test_errors(trained_cnn, calib, kwargs, match):
    args = {
        "calibration_data": calib,
        "method": "minmax",
        "weight_bits": 4,
        "activation_bits": 8,
        **kwargs,
    }
    with pytest.raises(ValueError, match=match):
        ptq.quantize(trained_cnn, **args)


def test_calibration_inputs_from_tuples_and_datasets(trained_cnn, digits):
    import tensorflow as tf

    (x, y), _ = digits
    from_tuple = ptq.calibration_array((x[:40], y[:40]), trained_cnn)
    batches = tf.data.Dataset.from_tensor_slices((x[:40], y[:40])).batch(16)
    from_dataset = ptq.calibration_array(batches, trained_cnn, max_samples=20)
    np.testing.assert_array_equal(from_tuple, x[:40])
    np.testing.assert_array_equal(from_dataset, x[:20])


def test_sequential_and_nested_models(digits):
    x = digits[0][0][:32]
    sequential = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, name="d"),
        ]
    )
    qmodel = ptq.quantize(
        sequential, x, method="mse", weight_bits=4, activation_bits=4, first_last_bits=None
    )
    assert qmodel.get_layer("c").input_quantizer.bits == 4
    inner = keras.Sequential(
        [keras.Input((8, 8, 4)), keras.layers.Conv2D(4, 1, name="inner_c")], name="inner"
    )
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(3, name="head")(
        keras.layers.Flatten()(inner(keras.layers.Conv2D(4, 1, name="first")(inputs)))
    )
    nested = keras.Model(inputs, outputs)
    weight_only = ptq.quantize(
        nested, None, method="aciq", weight_bits=3, activation_bits=None, first_last_bits=None
    )
    assert weight_only.get_layer("inner").get_layer("inner_c").kernel_quantizer.bits == 3
    with pytest.raises(ValueError, match="'inner_c' is inside a nested model"):
        ptq.quantize(nested, x, method="minmax", weight_bits=4, activation_bits=8)


@pytest.mark.parametrize("endless", ["generator", "repeat"])
def test_endless_calibration_data_is_capped(trained_cnn, calib, endless):
    import itertools

    import tensorflow as tf

    from kqrobust import inputs

    if endless == "generator":
        data = (calib[:32] for _ in itertools.count())
    else:
        data = tf.data.Dataset.from_tensor_slices(calib[:32]).batch(32).repeat()
    x = ptq.calibration_array(data, trained_cnn)
    assert len(x) == inputs.MAX_ITERABLE_SAMPLES
    qmodel = ptq.quantize(
        trained_cnn, (calib[:32] for _ in itertools.count()), weight_bits=4, activation_bits=8
    )
    assert isinstance(qmodel, kq.training.QuantModel)
