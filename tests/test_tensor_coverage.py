"""QAT quantizes every tensor the full-int8 file quantizes (kq.tensor_coverage)."""

import keras
import numpy as np
import pytest

import kqrobust as kq
from kqrobust import model_graph
from kqrobust.export import graph as export_graph
from kqrobust.export import tensors
from kqrobust.export.runtime import TFLiteRunner
from kqrobust.quantized_layers import input_quantizer_holders


def residual_model():
    """A residual block with Keras' defaults: Conv-BN into an Add, ReLU into a global pool."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    y = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="branch")(x)
    y = keras.layers.BatchNormalization(name="branch_bn")(y)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.ReLU(name="add_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def _litert_agreement(qmodel, x_train, x_test, path):
    """Argmax agreement of the full-int8 file, run in LiteRT, with the Keras QAT model."""
    kq.export.to_tflite(qmodel, x_train[:200], path)
    return np.mean(
        np.argmax(TFLiteRunner(path).predict(x_test), -1)
        == np.argmax(qmodel.predict(x_test, verbose=0), -1)
    )


def _identities(model):
    return {
        layer.name: layer
        for layer in model_graph.flat_layers(model)
        if isinstance(layer, kq.layers.QuantIdentity)
    }


def test_the_tensors_no_layer_input_covers_get_an_8_bit_quantizer(digits):
    (x_train, _), _ = digits
    qmodel = kq.quantize_model(residual_model(), "lsq", weight_bits=4, activation_bits=4)
    identities = _identities(qmodel)
    # The branch's folded BN output before the Add, the ReLU before the pool, the logits; and
    # the stem's ReLU, which the branch and the Add both read (one quantizer, the branch's).
    assert sorted(identities) == [
        "add_relu_quant",
        "branch_bn_quant",
        "logits_quant",
        "stem_relu_quant",
    ]
    for name in ["add_relu_quant", "branch_bn_quant", "logits_quant"]:
        identity = identities[name]
        assert identity.input_quantizer.bits == 8  # the int8 file's width, not the recipe's 4
        assert identity.input_quantizer.signed == (name != "add_relu_quant")  # ReLU: >= 0
        assert not identity.layer_input
    # The export has nothing left to calibrate from data.
    assert export_graph.calibrated_tensors(qmodel)[0] == []
    kq.training.initialize_activation_steps(qmodel, x_train[:256])
    assert all(not layer.uninitialized_quantizers() for layer in identities.values())


def test_without_coverage_the_export_calibrates_those_tensors():
    qmodel = kq.quantize_model(residual_model(), "lsq", cover_int8_tensors=False)
    assert _identities(qmodel) == {}
    assert export_graph.calibrated_tensors(qmodel)[0] == ["branch", "add_relu", "logits"]


def test_int8_file_agrees_with_the_qat_model_on_the_8_bit_logits(digits, tmp_path):
    (x_train, y_train), (x_test, _) = digits
    model = residual_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=3, verbose=0)
    qmodel = kq.quantize_model(model, "lsq", weight_bits=4, activation_bits=8)
    qmodel.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qmodel.fit(x_train, y_train, epochs=1, verbose=0)
    path = str(tmp_path / "m.tflite")
    kq.export.to_tflite(qmodel, x_train[:200], path)
    keras_logits = qmodel.predict(x_test, verbose=0)
    lite_logits = TFLiteRunner(path).predict(x_test)
    # Both sit on the grid the logits' QuantIdentity learned: the int8 file's output scale.
    low, high = qmodel.get_layer("logits_quant").export_input_ranges()[0]
    lsb = (high - low) / 255
    codes = (keras_logits - low) / lsb
    np.testing.assert_allclose(codes, np.round(codes), atol=1e-3)
    # Integer rounding along the way moves some by one step (19% measured), rarely two.
    differences = np.abs(lite_logits - keras_logits) / lsb
    assert np.mean(differences) <= 0.5 and np.mean(differences < 1.5) >= 0.99, differences
    assert np.mean(np.argmax(lite_logits, -1) == np.argmax(keras_logits, -1)) >= 0.98


def test_sequential_models_are_covered_too():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ]
    )
    qmodel = kq.quantize_model(model)
    assert [type(layer).__name__ for layer in qmodel.layers[1:]] == [
        "QuantConv2D",
        "QuantIdentity",
        "GlobalAveragePooling2D",
        "QuantDense",
        "QuantIdentity",
    ]


@pytest.mark.parametrize("separate", [True, False], ids=["Softmax layer", "Dense activation"])
def test_probabilities_on_tflites_fixed_range_stay_float(separate):
    inputs = keras.Input((6,))
    if separate:
        outputs = keras.layers.Softmax()(keras.layers.Dense(3, name="dense")(inputs))
    else:
        outputs = keras.layers.Dense(3, activation="softmax", name="dense")(inputs)
    qmodel = kq.quantize_model(keras.Model(inputs, outputs))
    # The logits get their 8-bit grid (a softmax inside the Dense is split out first). The
    # softmax output is on TFLite's fixed [0, 255/256] grid; quantizing it in training
    # would stop the cross-entropy gradient where a probability rounds to 0.
    assert sorted(_identities(qmodel)) == ["dense_quant"]
    assert type(qmodel.layers[-1]).__name__ == ("Softmax" if separate else "Activation")


def test_inner_sigmoids_get_tflites_fixed_grid(digits):
    """Swish and a squeeze-excite gate, as EfficientNet writes them, with Keras defaults."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.Activation("swish", name="stem_swish")(keras.layers.BatchNormalization()(x))
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(x)
    gate = keras.layers.Conv2D(8, 1, activation="sigmoid", name="se_expand")(gate)
    x = keras.layers.Multiply(name="excite")([x, gate])
    x = keras.layers.GlobalAveragePooling2D()(x)
    qmodel = kq.quantize_model(keras.Model(inputs, keras.layers.Dense(10, name="logits")(x)))
    fixed = {
        name: layer
        for name, layer in _identities(qmodel).items()
        if isinstance(layer.input_quantizer, kq.quantizers.FixedRange)
    }
    # swish's sigmoid (an operation once split) and the gate's split-out sigmoid.
    assert len(fixed) == 2 and "se_expand_activation_quant" in fixed, sorted(fixed)
    for layer in fixed.values():
        assert layer.export_input_ranges() == [(0.0, 255 / 256)]  # TFLite's LOGISTIC output
        assert not layer.input_quantizer.trainable
    (x_train, _), _ = digits
    kq.training.initialize_activation_steps(qmodel, x_train[:64])
    assert export_graph.calibrated_tensors(qmodel)[0] == []
    sigmoid = np.linspace(0, 1, 1000, dtype="float32")[None]
    layer = fixed["se_expand_activation_quant"]
    np.testing.assert_allclose(layer(sigmoid), np.minimum(np.round(sigmoid * 256), 255) / 256)


def test_float_view_and_ptq_keep_the_model_structure(trained_cnn, digits):
    (x_train, _), _ = digits
    float_model = kq.ptq.float_view(kq.quantize_model(trained_cnn, "lsq"))
    assert _identities(float_model) == {}
    assert [l.name for l in float_model.layers] == [l.name for l in trained_cnn.layers]
    pmodel = kq.ptq.quantize(trained_cnn, x_train[:256], method="minmax", weight_bits=8)
    identities = _identities(pmodel)
    assert identities and all(not l.uninitialized_quantizers() for l in identities.values())


def test_a_preprocessing_input_is_the_only_tensor_calibrated_and_exports(digits, tmp_path):
    (x_train, y_train), (x_test, _) = digits
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(2.0, offset=-1.0, name="pixels")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    qmodel = kq.quantize_model(keras.Model(inputs, outputs), calibration_data=x_train[:256])
    assert export_graph.calibrated_tensors(qmodel)[0] == [tensors.INPUT]
    agreement = _litert_agreement(qmodel, x_train, x_test, str(tmp_path / "m.tflite"))
    assert agreement >= 0.98, agreement


def test_a_tensor_several_operations_read_has_one_quantizer():
    qmodel = kq.quantize_model(residual_model(), "lsq", weight_bits=4, activation_bits=4)
    shared = qmodel.get_layer("stem_relu_quant")
    # The branch's planned input quantizer (4-bit, unsigned after a ReLU) moved onto the tensor.
    assert shared.layer_input
    assert (shared.input_quantizer.bits, shared.input_quantizer.signed) == (4, False)
    assert qmodel.get_layer("branch").input_quantizer is None
    assert model_graph.consumers(qmodel)["stem_relu_quant"] == ["branch", "add"]
    row = {r.name: r for r in qmodel.quantization_summary()}["branch"]
    assert (row.weight_bits, row.activation_bits) == (4, 4)
    assert "stem_relu_quant" in row.note


def test_with_one_quantizer_per_tensor_the_qat_model_is_the_export_graph(digits):
    """At W8A8 the Keras model and the graph the int8 file is converted from compute the same.

    Before, the Add read the stem's ReLU in float while the int8 file reads it on the branch's
    grid (0.024 apart on the logits of this model).
    """
    (x_train, _), (x_test, _) = digits
    qmodel = kq.quantize_model(
        residual_model(), "lsq", weight_bits=8, activation_bits=8, calibration_data=x_train[:256]
    )
    graph = export_graph.export_model(qmodel, x_train[:200])
    np.testing.assert_allclose(
        graph.predict(x_test, verbose=0), qmodel.predict(x_test, verbose=0), atol=1e-5
    )


def test_attention_projections_read_one_quantized_tensor():
    inputs = keras.Input((6, 8))
    tokens = keras.layers.LayerNormalization(name="norm")(inputs)
    attended = keras.layers.MultiHeadAttention(2, 4, name="mha")(tokens, tokens)
    qmodel = kq.quantize_model(keras.Model(inputs, attended), "lsq")
    projections = [qmodel.get_layer(f"mha_{n}") for n in ("query", "key", "value")]
    assert all(layer.input_quantizer is None for layer in projections)
    assert qmodel.get_layer("norm_quant").layer_input


def test_a_layer_that_perturbs_its_input_keeps_its_quantizer():
    # SFP draws its noise from the layer's own input step (FPQ), so nothing moves.
    qmodel = kq.quantize_model(residual_model(), "fpq", weight_bits=4, activation_bits=4)
    assert qmodel.get_layer("branch").input_quantizer is not None
    assert "stem_relu_quant" not in _identities(qmodel)


def test_ptq_calibrates_a_shared_tensor_with_its_rule(digits):
    (x_train, y_train), _ = digits
    model = residual_model()
    x = x_train[:256]
    pmodel = kq.ptq.quantize(model, x, method="minmax", weight_bits=4, activation_bits=4)
    shared = pmodel.get_layer("stem_relu_quant")
    # Min-max on the float model's tensor: 4-bit unsigned, max / 15.
    stem_relu = keras.Model(model.inputs, model.get_layer("stem_relu").output).predict(x, verbose=0)
    step = float(np.asarray(shared.input_quantizer_weights["step"]).squeeze())
    np.testing.assert_allclose(step, stem_relu.max() / 15, rtol=1e-5)


def test_a_layer_reading_a_fixed_grid_reads_that_grid_only(digits, tmp_path):
    """A convolution after a sigmoid: TFLite gives the sigmoid's output its fixed 1/256 scale,
    and the convolution reads it as it is (its own input range is dropped at export).

    Before, the convolution's own 4-bit input quantizer rounded the sigmoid again in QAT only:
    94% of the logits differed from the export graph's, by up to 22 steps."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="sigmoid", name="gate")(inputs)
    x = keras.layers.Conv2D(8, 3, name="after")(x)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    (x_train, _), (x_test, _) = digits
    qmodel = kq.quantize_model(keras.Model(inputs, outputs), calibration_data=x_train[:256])
    assert qmodel.get_layer("after").input_quantizer is None
    holder = input_quantizer_holders(qmodel)["after"]
    assert isinstance(holder.input_quantizer, kq.quantizers.FixedRange)
    graph = export_graph.export_model(qmodel, x_train[:200])
    # The export graph rounds the convolution's bias to its int32 grid, which QAT does not:
    # a few logits move by one step of their 8-bit grid (0.5% measured), none by more.
    low, high = qmodel.get_layer("logits_quant").export_input_ranges()[0]
    steps = np.abs(graph.predict(x_test, verbose=0) - qmodel.predict(x_test, verbose=0)) / (
        (high - low) / 255
    )
    assert steps.max() <= 1.01 and np.mean(steps > 0.5) <= 0.02, steps.max()
    agreement = _litert_agreement(qmodel, x_train, x_test, str(tmp_path / "m.tflite"))
    assert agreement >= 0.98, agreement


def test_readers_behind_a_pooling_share_the_tensors_quantizer(digits, tmp_path):
    """An Inception-style block: a tensor feeds a convolution and, through a max-pooling (which
    keeps its int8 scale), two more. In the int8 file all three read the tensor's one grid; the
    pooled tensor gets no quantizer of its own (before, a second one, equal to the first only
    while both steps kept their initial values)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    a = keras.layers.Conv2D(8, 1, use_bias=False, name="branch_a")(x)
    pooled = keras.layers.MaxPooling2D(3, strides=1, padding="same", name="pool")(x)
    b = keras.layers.Conv2D(8, 1, use_bias=False, name="branch_b")(pooled)
    c = keras.layers.Conv2D(8, 1, use_bias=False, name="branch_c")(pooled)
    x = keras.layers.Concatenate(name="concat")([a, b, c])
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.ReLU()(x))
    (x_train, _), (x_test, _) = digits
    qmodel = kq.quantize_model(
        keras.Model(inputs, keras.layers.Dense(10, name="logits")(x)),
        weight_bits=8,
        activation_bits=8,
        calibration_data=x_train[:256],
    )
    holders = input_quantizer_holders(qmodel)
    assert {holders[n].name for n in ("branch_a", "branch_b", "branch_c")} == {"stem_relu_quant"}
    assert "pool_quant" not in _identities(qmodel)  # the pooled tensor keeps stem_relu's grid
    graph = export_graph.export_model(qmodel, x_train[:200])
    np.testing.assert_allclose(
        graph.predict(x_test, verbose=0), qmodel.predict(x_test, verbose=0), atol=1e-5
    )
    agreement = _litert_agreement(qmodel, x_train, x_test, str(tmp_path / "m.tflite"))
    assert agreement >= 0.98, agreement


@pytest.mark.parametrize("statistics", ["imagenet", "identity"])
def test_affine_preprocessing_is_the_int8_files_mul_and_add(digits, tmp_path, statistics):
    """EfficientNet's preprocessing (`Rescaling(1/255)`, `Normalization`): QAT
    computes the file's MUL and ADD, with the constants the file stores and a
    quantizer on the product, and an identity Normalization (EfficientNet's
    with `weights=None`) vanishes as in the file, where it made QAT round the
    stem's input twice. The Keras model's int8 logits are then LiteRT's."""
    (x_train, _), (x_test, _) = digits
    x_train, x_test = (np.round(np.repeat(x, 3, axis=-1) * 255.0) for x in (x_train, x_test))
    mean, variance = {
        "imagenet": ([0.485, 0.456, 0.406], [0.229**2, 0.224**2, 0.225**2]),
        "identity": ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    }[statistics]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescaling")(inputs)
    x = keras.layers.Normalization(mean=mean, variance=variance, name="normalization")(x)
    x = keras.layers.ZeroPadding2D(1, name="pad")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, use_bias=False, name="stem")(x)
    x = keras.layers.ReLU(name="relu")(keras.layers.BatchNormalization(name="stem_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))
    qmodel = kq.quantize_model(model, calibration_data=x_train[:256])
    kq.recalibrate_batchnorm(qmodel, x_train)
    kq.round_biases_to_int32(qmodel)
    kinds = {type(layer).__name__ for layer in qmodel.layers}
    assert not kinds & {"Rescaling", "Normalization"}, kinds
    assert export_graph.calibrated_tensors(qmodel)[0] == [tensors.INPUT]
    # The stem's input quantizer rounds what it reads; the products before the ADD
    # (Rescaling's, Normalization's) have their own.
    assert qmodel.get_layer("stem").input_quantizer is not None
    products = {"imagenet": 2, "identity": 0}[statistics]
    assert len(set(_identities(qmodel)) - {"relu_quant", "logits_quant"}) == products
    path = str(tmp_path / "preprocessing.tflite")
    kq.export.to_tflite(qmodel, x_train[:200], path)
    lite = TFLiteRunner(path).predict(x_test)
    keras_logits = qmodel.predict(x_test, verbose=0)
    output = _identities(qmodel)["logits_quant"]
    step = float(np.asarray(output.input_quantizer.effective_step(output.input_quantizer_weights)))
    same = np.round(keras_logits / step) == np.round(lite / step)
    assert same.mean() >= 0.999, same.mean()


def test_a_squeeze_excite_at_1x1_reads_the_grid_before_its_identity_pooling(digits, tmp_path):
    """EfficientNetB0 at 32x32 reaches a 1x1 resolution at block 6: its
    squeeze (a global average over one pixel, then a Reshape) is an identity
    the converter removes with its requantization, so LiteRT's 1x1 convolution
    reads the tensor before it. QAT does the same: that convolution has no
    input quantizer of its own, and with the steps moved off their calibrated
    values (as training moves them) the int8 logits are still LiteRT's. With
    its own quantizer 1% of the codes differed."""
    (x_train, _), (x_test, _) = digits
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, strides=8, padding="same", activation="swish", name="stem")(
        inputs
    )
    se = keras.layers.GlobalAveragePooling2D(name="squeeze")(x)
    se = keras.layers.Reshape((1, 1, 16), name="se_reshape")(se)
    se = keras.layers.Conv2D(4, 1, activation="swish", name="se_reduce")(se)
    se = keras.layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(se)
    x = keras.layers.Multiply(name="excite")([x, se])
    x = keras.layers.Conv2D(8, 1, name="project")(x)
    outputs = keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(x))
    qmodel = kq.quantize_model(
        keras.Model(inputs, outputs),
        weight_bits=8,
        activation_bits=8,
        calibration_data=x_train[:256],
    )
    assert qmodel.get_layer("se_reduce").input_quantizer is None
    rng = np.random.default_rng(0)
    for layer in qmodel.layers:
        if isinstance(
            getattr(layer, "input_quantizer", None), kq.quantizers.LSQ
        ) and not isinstance(layer.input_quantizer, kq.quantizers.FixedRange):
            step = layer.input_quantizer_weights["step"]
            step.assign(step * rng.uniform(0.7, 1.3))
    kq.round_biases_to_int32(qmodel)
    path = str(tmp_path / "squeeze_excite.tflite")
    kq.export.to_tflite(qmodel, x_train[:200], path)
    output = _identities(qmodel)["logits_quant"]
    step = float(np.asarray(output.input_quantizer.effective_step(output.input_quantizer_weights)))
    same = np.round(qmodel.predict(x_test, verbose=0) / step) == np.round(
        TFLiteRunner(path).predict(x_test) / step
    )
    assert same.mean() >= 0.999, same.mean()
