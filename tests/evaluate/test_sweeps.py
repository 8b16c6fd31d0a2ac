"""bitwidth_sweep, requantize/rescale and step_size_sweep against independent computations."""

import numpy as np
import pytest

from kqrobust import evaluate
from kqrobust import ptq
from kqrobust.evaluate.bitwidth import bit_configs
from kqrobust.evaluate.bitwidth import config_label
from kqrobust.evaluate.data import as_arrays
from kqrobust.quantized_layers import input_quantizer_holders


def top1(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def test_accuracy_and_data_conversion(trained_cnn, digits):
    import tensorflow as tf

    _, (x, y) = digits
    assert evaluate.accuracy(trained_cnn, x, y) == pytest.approx(top1(trained_cnn, x, y))
    one_hot = np.eye(10)[y]
    batches = tf.data.Dataset.from_tensor_slices((x, one_hot)).batch(50)
    x2, y2 = as_arrays(batches, max_samples=120)
    np.testing.assert_array_equal(x2, x[:120])
    np.testing.assert_array_equal(y2, y[:120])
    with pytest.raises(ValueError, match="as many labels as inputs"):
        as_arrays((x, y[:5]))


def test_labels_and_configs():
    assert [config_label(w, a) for w, a in [(None, None), (4, None), (6, 6)]] == [
        "FP",
        "4/FP",
        "6/6",
    ]
    assert bit_configs([4, 3], None) == [(4, None), (3, None)]
    assert bit_configs([4, 3], 8) == [(4, 8), (3, 8)]
    assert bit_configs([4, 6], [None, 6]) == [(4, None), (6, 6)]
    with pytest.raises(ValueError, match="a list as long as weight_bits"):
        bit_configs([4, 3], [4])


def test_bitwidth_sweep_rows_match_direct_ptq(trained_cnn, digits):
    (x_train, _), (x, y) = digits
    calib = x_train[:128]
    rows = evaluate.bitwidth_sweep(
        trained_cnn,
        (x, y),
        weight_bits=[8, 2, 4],
        activation_bits=[None, None, 4],
        calibration_data=calib,
    )
    assert [r["label"] for r in rows] == ["FP", "8/FP", "2/FP", "4/4"]
    assert rows[0]["accuracy"] == pytest.approx(top1(trained_cnn, x, y))
    assert {r["method"] for r in rows[1:]} == {"aciq_laplace"}
    direct = ptq.quantize(
        trained_cnn, calib, method="aciq_laplace", weight_bits=4, activation_bits=4
    )
    assert rows[3]["accuracy"] == pytest.approx(top1(direct, x, y))
    assert abs(rows[1]["accuracy"] - rows[0]["accuracy"]) < 0.02
    assert rows[2]["accuracy"] < rows[1]["accuracy"]


def test_rescale_at_the_trained_bit_width_reproduces_the_qat_model(qat_cnn, digits):
    (x_train, _), (x, _) = digits
    requantized = evaluate.requantize(qat_cnn, 4, 4, calibration_data=x_train[:64])
    np.testing.assert_allclose(
        requantized.predict(x[:64], verbose=0), qat_cnn.predict(x[:64], verbose=0), atol=1e-4
    )


def test_rescale_keeps_the_clipping_range(qat_cnn, digits):
    x_train = digits[0][0]
    requantized = evaluate.requantize(
        qat_cnn, 2, 3, method="rescale", calibration_data=x_train[:64]
    )
    old_inputs = input_quantizer_holders(qat_cnn)
    new_inputs = input_quantizer_holders(requantized)
    for name in ("dw", "pw", "conv2"):
        trained, new = qat_cnn.get_layer(name), requantized.get_layer(name)
        old_step = np.asarray(trained.kernel_quantizer_weights["step"])
        # Signed 4 -> 2 bits: 16 -> 4 levels, [-8s, 7s] -> [-2s', s'] with s' = 4s
        # (the clip threshold 8s kept, Banner et al.'s step 2*alpha/2^M).
        np.testing.assert_allclose(
            np.asarray(new.kernel_quantizer_weights["step"]), old_step * 16 / 4, rtol=1e-6
        )
        # dw's input quantizer is the stem ReLU's QuantIdentity (the residual Add reads it too).
        old_input = np.asarray(old_inputs[name].input_quantizer_weights["step"])
        np.testing.assert_allclose(
            np.asarray(new_inputs[name].input_quantizer_weights["step"]),
            old_input * 16 / 8,
            rtol=1e-6,
        )  # unsigned 4 -> 3 bits
        codes = np.asarray(new.quantized_kernel()) / np.asarray(
            new.kernel_quantizer_weights["step"]
        )
        assert set(np.unique(np.round(codes)).astype(int)) <= {-2, -1, 0, 1}
    # The 8-bit first and last layers keep their trained steps.
    np.testing.assert_allclose(
        np.asarray(requantized.get_layer("stem").kernel_quantizer_weights["step"]),
        np.asarray(qat_cnn.get_layer("stem").kernel_quantizer_weights["step"]),
        rtol=1e-6,
    )


def test_auto_method_and_unknown_method(trained_cnn, qat_cnn):
    from kqrobust.evaluate.requantize import resolve_method

    assert resolve_method(trained_cnn, "auto") == "aciq_laplace"
    assert resolve_method(qat_cnn, "auto") == "rescale"
    assert resolve_method(trained_cnn, "aciq") == "aciq_laplace"
    with pytest.raises(ValueError, match="Unknown PTQ method.*'auto', 'rescale'"):
        resolve_method(trained_cnn, "bogus")


def test_step_size_sweep_scales_the_weight_steps(trained_cnn, digits):
    (x_train, _), (x, y) = digits
    calib = x_train[:64]
    rows = evaluate.step_size_sweep(
        trained_cnn, (x, y), factors=[1.0, 0.5], weight_bits=3, method="mse", calibration_data=calib
    )
    assert [r["factor"] for r in rows] == [1.0, 0.5]
    reference = ptq.quantize(trained_cnn, calib, method="mse", weight_bits=3, activation_bits=None)
    assert rows[0]["accuracy"] == pytest.approx(top1(reference, x, y))
    for layer in reference.layers:
        weights = getattr(layer, "kernel_quantizer_weights", {})
        if "step" in weights:
            weights["step"].assign(weights["step"] * 0.5)
    assert rows[1]["accuracy"] == pytest.approx(top1(reference, x, y))
    with pytest.raises(ValueError, match="tensors must be a non-empty subset"):
        evaluate.step_size_sweep(trained_cnn, (x, y), tensors=("bias",))
