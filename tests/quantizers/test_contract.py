"""The quantizer contract (`kq.quantizers.Quantizer`), run on every registered name.

Like larq's common-functionality tests: each name of `register_quantizer`
goes through build, call, serialization (its own and a `.keras` model round
trip), the export range and PTQ calibration. A quantizer registered later is
covered with no edit here.
"""

import inspect

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import quantizers
from kqrobust.export import ranges
from kqrobust.ops.lsq import quant_levels
from kqrobust.ptq import layer_math
from kqrobust.quantized_layers import quantized_layers

NAMES = sorted(quantizers.ALIASES)
RNG = np.random.default_rng(0)
KERNEL = RNG.normal(size=(3, 3, 2, 4)).astype("float32")
ACTIVATIONS = RNG.normal(size=(8, 5)).astype("float32")


def weight_quantizer(name):
    return quantizers.get(name).replace(bits=4, channel_axis=-1)


def activation_quantizer(name):
    return quantizers.get(name).replace(bits=4, per_sample=True)


def built(quantizer, x):
    host = keras.layers.Layer(name="host")
    shape = (None,) + x.shape[1:] if quantizer.get_config().get("per_sample") else x.shape
    weights = quantizer.build(shape, "t", host)
    return weights, host


def values(weights):
    return {k: np.array(v.numpy()) for k, v in weights.items()}


def check_on_grid(quantizer, weights, x, y):
    """`y` has `x`'s shape, lies in the quantizer's range (give or take the
    one step by which TF's FakeQuant nudges a min-max range onto zero) and has
    at most `Qn + Qp + 1` levels per step; with a step it is NumPy's
    `round(clip((x - offset) / s, -Qn, Qp)) * s + offset`."""
    assert y.shape == x.shape and y.dtype == np.float32
    qn, qp = quantizer.levels
    assert (qn, qp) == quant_levels(quantizer.bits, quantizer.signed, quantizer.narrow_range)
    lo, hi = (np.asarray(v, np.float64) for v in quantizer.quantization_range(weights, x=x))
    flat = y.reshape(-1, lo.size).astype(np.float64)
    scale = (hi - lo).reshape(-1) / (qn + qp)
    slack = scale * (1e-6 if quantizer.has_step else 1.0)
    assert np.all(flat >= lo.reshape(-1) - slack) and np.all(flat <= hi.reshape(-1) + slack)
    for column in flat.T:
        assert len(np.unique(column)) <= qn + qp + 1
    if quantizer.has_step:
        step = np.asarray(quantizer.effective_step(weights), np.float64).reshape(-1)
        offset = quantizer.offset(weights)
        offset = 0.0 if offset is None else np.asarray(offset, np.float64).reshape(-1)
        columns = x.reshape(-1, step.size).astype(np.float64)
        expected = np.round(np.clip((columns - offset) / step, -qn, qp)) * step + offset
        np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("role", ["weights", "activations"])
def test_build_call_initialize(name, role):
    quantizer = (weight_quantizer if role == "weights" else activation_quantizer)(name)
    x = KERNEL if role == "weights" else ACTIVATIONS
    weights, host = built(quantizer, x)
    assert isinstance(weights, dict)
    owned = {id(v) for v in host.weights}
    assert all(id(v) in owned for v in weights.values()), "variables are made by layer.add_weight"
    before = values(weights)
    y = np.asarray(quantizer(x, weights, training=False))
    for key, value in before.items():  # inference never writes a variable
        np.testing.assert_array_equal(weights[key].numpy(), value)
    quantizer.initialize(x, weights)
    assert quantizer.is_initialized(weights)
    y = np.asarray(quantizer(x, weights, training=False))
    check_on_grid(quantizer, weights, x, y)
    np.testing.assert_allclose(np.asarray(quantizer(y, weights)), y, rtol=1e-5, atol=1e-6)
    y_train = np.asarray(quantizer(x, weights, training=True))
    check_on_grid(quantizer, weights, x, y_train)


@pytest.mark.parametrize("name", NAMES)
def test_config_is_the_constructor_arguments(name):
    quantizer = weight_quantizer(name)
    config = quantizer.get_config()
    params = set(inspect.signature(type(quantizer).__init__).parameters) - {"self"}
    assert set(config) == params
    # The arguments the planner sets per layer.
    per_layer = {"bits", "signed", "narrow_range", "channel_axis", "per_sample"}
    assert per_layer <= params
    assert type(quantizer).from_config(config) == quantizer
    assert quantizers.deserialize(quantizers.serialize(quantizer)) == quantizer
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(quantizer))
    assert revived == quantizer
    assert quantizers.REGISTERED[type(quantizer).__name__] is type(quantizer)


@pytest.mark.parametrize("name", NAMES)
def test_export_range(name):
    """The activation FakeQuant range holds the outputs and 0; a weight step
    makes the int8 weights `k * codes` inside `[-127, 127]`."""
    quantizer = activation_quantizer(name).replace(per_sample=False)
    weights, _ = built(quantizer, ACTIVATIONS)
    quantizer.initialize(ACTIVATIONS, weights)
    found = ranges.activation_range(quantizer, weights)
    if found is None:  # a range that is the tensor's own: the representative data sets it
        assert quantizer.quantization_range(weights) is None
    else:
        lo, hi = found
        y = np.asarray(quantizer(ACTIVATIONS, weights))
        qn, qp = quantizer.levels
        nudge = 0.0 if quantizer.has_step else (hi - lo) / (qn + qp)  # TF FakeQuant's, onto zero
        assert lo <= 0.0 <= hi and lo - nudge <= y.min() + 1e-6 and y.max() <= hi + nudge + 1e-6
    quantizer = weight_quantizer(name)
    weights, _ = built(quantizer, KERNEL)
    quantizer.initialize(KERNEL, weights)
    step = ranges.weight_step(quantizer, weights, KERNEL)
    y = np.asarray(quantizer(KERNEL, weights), np.float64)
    if step is None:  # no int8 codes: an offset, or a grid without zero on a code
        if quantizer.has_step:
            assert quantizer.offset(weights) is not None
        else:
            lo, hi = (np.asarray(v) for v in quantizer.quantization_range(weights, x=KERNEL))
            qn, qp = quantizer.levels
            assert not np.allclose(lo, -qn * (hi - lo) / (qn + qp), rtol=1e-6)
    else:
        k = ranges.code_multiplier(quantizer)
        int8 = y * k / step  # the int8 weights, at the scale s / k
        np.testing.assert_allclose(int8, np.round(int8), atol=1e-3)
        assert np.abs(np.round(int8)).max() <= 127


@pytest.fixture(scope="module")
def float_model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))


@pytest.mark.parametrize("name", NAMES)
def test_keras_round_trip_and_ptq_calibration(name, float_model, tmp_path):
    """A model quantized with the name for weights and activations saves and
    loads as `.keras`, and PTQ calibration sets the steps it has."""
    x = RNG.normal(size=(16, 6)).astype("float32")
    qmodel = kq.quantize_model(
        float_model,
        recipe=kq.Recipe(
            name="contract",
            weight_quantizer=name,
            activation_quantizer=name,
            weight_bits=4,
            activation_bits=8,
            first_last_bits=None,
        ),
        calibration_data=x,
    )
    kq.ptq.calibrate_ranges(qmodel, float_model, x, "minmax")
    for layer in quantized_layers(qmodel):
        for quantizer, weights, tensor in (
            (layer.kernel_quantizer, layer.kernel_quantizer_weights, layer.kernel),
            (layer.input_quantizer, layer.input_quantizer_weights, None),
        ):
            assert quantizer.is_initialized(weights)
            if quantizer.has_step and tensor is not None:
                qn, qp = quantizer.levels
                kernel = np.asarray(layer.transformed_kernel())
                expected = np.maximum(kernel.max(axis=0) / qp, -kernel.min(axis=0) / qn)
                np.testing.assert_allclose(quantizer.step(weights), expected, rtol=1e-5)
    path = str(tmp_path / "model.keras")
    qmodel.save(path)
    revived = keras.models.load_model(path)
    np.testing.assert_array_equal(
        np.asarray(revived(x, training=False)), np.asarray(qmodel(x, training=False))
    )
    for old, new in zip(quantized_layers(qmodel), quantized_layers(revived)):
        assert new.kernel_quantizer == old.kernel_quantizer
        assert new.input_quantizer == old.input_quantizer


@pytest.mark.parametrize("name", [n for n in NAMES if quantizers.get(n).has_step])
def test_step_accessors(name):
    """`set_step` writes the step and marks it initialised; `quantize_with_step`
    with the quantizer's own step is its forward pass."""
    quantizer = weight_quantizer(name)
    weights, _ = built(quantizer, KERNEL)
    step = np.linspace(0.1, 0.4, 4).astype("float32")
    quantizer.set_step(weights, step)
    assert quantizer.is_initialized(weights)
    np.testing.assert_array_equal(np.asarray(quantizer.step(weights)), step)
    np.testing.assert_array_equal(
        np.asarray(quantizer.quantize_with_step(KERNEL, weights, quantizer.step(weights))),
        np.asarray(quantizer(KERNEL, weights)),
    )


def test_quantizers_without_a_step_say_so():
    quantizer = quantizers.MinMax()
    assert not quantizer.has_step and quantizer.offset({}) is None
    for accessor in ("step", "effective_step"):
        with pytest.raises(TypeError, match=f"MinMax.{accessor} needs a quantizer with a step"):
            getattr(quantizer, accessor)({})


class PowerOfTwo(quantizers.FixedRange):
    """A step-based quantizer that is not LSQ: its step is rounded to a power of two."""

    def effective_step(self, weights):
        return 2.0 ** keras.ops.round(keras.ops.log2(super().effective_step(weights)))

    def quantize_with_step(self, x, weights, step):
        step = 2.0 ** keras.ops.round(keras.ops.log2(step))
        return super().quantize_with_step(x, weights, step)

    def __call__(self, x, weights, training=False):
        return self.quantize_with_step(x, weights, weights["step"])


def test_layer_math_calls_the_layers_own_quantizer():
    """AdaQuant and bias correction evaluate a layer with a candidate step
    through the layer's quantizer (`quantize_with_step`), not LSQ's formula."""
    layer = kq.layers.QuantDense(
        3, kernel_quantizer=PowerOfTwo(bits=4, channel_axis=-1), input_quantizer=None
    )
    x = RNG.normal(size=(4, 6)).astype("float32")
    layer(x)
    step = np.full(3, 0.3, "float32")  # 0.3 is taken as 0.25
    out = np.asarray(layer_math.preactivation(layer, x, layer.kernel, None, kernel_step=step))
    kernel = np.asarray(layer.kernel, np.float64)
    expected = x @ (np.round(np.clip(kernel / 0.25, -8, 7)) * 0.25)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_register_quantizer_refuses_a_taken_name():
    with pytest.raises(ValueError, match=r"\['lsq'\] are already registered.*override=True"):
        quantizers.register_quantizer("lsq")(PowerOfTwo)
    with pytest.raises(ValueError, match=r"\['LSQ'\] are already registered"):
        quantizers.register_quantizer()(type("LSQ", (quantizers.LSQ,), {}))
    with pytest.raises(TypeError, match="decorates a kq.quantizers.Quantizer subclass"):
        quantizers.register_quantizer("dense")(keras.layers.Dense)
    assert "PowerOfTwo" not in quantizers.REGISTERED and quantizers.get("lsq") == quantizers.LSQ()
