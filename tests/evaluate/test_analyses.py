"""level_sensitivity, error_propagation, output_variance and weight statistics against NumPy."""

import keras
import numpy as np
import pytest

from kqrobust import evaluate
from kqrobust import ptq
from kqrobust.evaluate import weight_stats


def top1(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def test_level_sensitivity_matches_a_manual_single_level_quantization(trained_cnn, digits):
    _, (x, y) = digits
    result = evaluate.level_sensitivity(trained_cnn, (x, y), weight_bits=3, method="minmax")
    assert [r["level"] for r in result["levels"]] == [-4, -3, -2, -1, 0, 1, 2, 3]
    assert sum(r["fraction"] for r in result["levels"]) == pytest.approx(1.0)
    assert result["float_accuracy"] == pytest.approx(top1(trained_cnn, x, y))
    # Level 0 by hand: the weights of the 3-bit layers (dw, pw, conv2) that round to 0.
    manual = keras.models.clone_model(trained_cnn)
    manual.set_weights(trained_cnn.get_weights())
    on_zero = total = 0
    for name in ("dw", "pw", "conv2"):
        kernel = np.asarray(trained_cnn.get_layer(name).kernel)
        channels = kernel.shape[-2:] if name == "dw" else kernel.shape[-1:]
        flat = kernel.reshape(-1, *channels)
        # Min-max on LSQ's 3-bit grid [-4, 3]: the smallest step covering both ends.
        step = np.maximum(flat.max(axis=0) / 3, -flat.min(axis=0) / 4)
        zero = np.round(np.clip(kernel / step, -4, 3)) == 0
        manual.get_layer(name).kernel.assign(np.where(zero, 0.0, kernel))
        on_zero += zero.sum()
        total += zero.size
    level0 = result["levels"][4]
    assert level0["fraction"] == pytest.approx(on_zero / total)
    assert level0["accuracy"] == pytest.approx(top1(manual, x, y))


def test_level_sensitivity_needs_a_layer_at_the_bit_width(digits):
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    with pytest.raises(ValueError, match="No layer has its weights at weight_bits=4"):
        evaluate.level_sensitivity(model, digits[1])


def test_histogram_kl_against_closed_form():
    assert evaluate.histogram_kl([3, 5, 0], [3, 5, 0]) == pytest.approx(0.0, abs=1e-9)
    expected = 0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)
    assert evaluate.histogram_kl([1, 1], [9, 1]) == pytest.approx(expected, rel=1e-6)


def test_error_propagation_is_the_kl_of_layer_output_histograms(trained_cnn, digits):
    (x_train, _), (x, _) = digits
    x = x[:100]
    low = ptq.quantize(
        trained_cnn, x_train[:64], method="minmax", weight_bits=2, activation_bits=None
    )
    rows = evaluate.error_propagation(trained_cnn, x, quantized_model=low, bins=32)
    assert [r["layer"] for r in rows] == ["stem", "dw", "pw", "conv2", "logits"]

    # 'pw' by hand with NumPy histograms.
    def pw_output(model):
        return keras.Model(model.inputs, model.get_layer("pw").output).predict(x, verbose=0)

    out_f, out_q = pw_output(trained_cnn), pw_output(low)
    edges = (min(out_f.min(), out_q.min()), max(out_f.max(), out_q.max()))
    p = np.histogram(out_f, 32, edges)[0] + 1e-10
    q = np.histogram(out_q, 32, edges)[0] + 1e-10
    p, q = p / p.sum(), q / q.sum()
    assert rows[2]["kl"] == pytest.approx(np.sum(p * np.log(p / q)), rel=1e-3)
    high = evaluate.error_propagation(trained_cnn, x, weight_bits=8, method="minmax", bins=32)
    assert sum(r["kl"] for r in high) < sum(r["kl"] for r in rows)


def test_output_variance_against_numpy(trained_cnn, digits):
    x = digits[1][0][:90]
    result = evaluate.output_variance({"float": trained_cnn}, x, batch_size=32)
    logits = trained_cnn.predict(x, verbose=0)
    assert result["float"]["output"] == pytest.approx(np.var(logits), rel=1e-5)
    conv2 = keras.Model(trained_cnn.inputs, trained_cnn.get_layer("conv2").output)
    assert result["float"]["layers"]["conv2"] == pytest.approx(
        np.var(conv2.predict(x, verbose=0)), rel=1e-5
    )
    assert list(result["float"]["layers"]) == ["stem", "dw", "pw", "conv2", "logits"]


def test_symmetry_loss_against_methods_formula():
    rng = np.random.default_rng(0)
    columns = rng.normal(size=(9, 4))  # N odd: the middle element is not counted
    n, c = columns.shape
    total = 0.0
    for ch in range(c):
        w = sorted(columns[:, ch])
        total += sum(abs(w[i - 1] + w[n - i]) for i in range(1, n // 2 + 1))
    assert weight_stats.symmetry_loss(columns) == pytest.approx(2 / (c * n) * total)
    mirrored = np.concatenate([columns, -columns])
    assert weight_stats.symmetry_loss(mirrored) == pytest.approx(0.0, abs=1e-12)


def test_layer_statistics_against_numpy():
    rng = np.random.default_rng(1)
    kernel = rng.laplace(size=(3, 3, 8, 6))
    stats = weight_stats.layer_statistics(kernel, 6)
    flat = kernel.ravel()
    z = (flat - flat.mean()) / flat.std()
    assert stats["kurtosis"] == pytest.approx(np.mean(z**4))
    columns = kernel.reshape(-1, 6)
    b = np.mean(np.abs(columns - columns.mean(0)), 0)
    assert stats["clipped_fraction"] == pytest.approx(np.mean(np.abs(columns) > 5.03 * b))
    uniform = weight_stats.layer_statistics(rng.uniform(-1, 1, size=(4000, 2)), 2)
    assert uniform["kurtosis"] == pytest.approx(1.8, abs=0.1)
    assert uniform["clipped_fraction"] == 0.0


def test_weight_statistics_use_the_transformed_kernels():
    from kqrobust import layers as qlayers

    inputs = keras.Input((4,))
    outputs = qlayers.QuantDense(3, name="d", weight_transform=keras.activations.tanh)(inputs)
    model = keras.Model(inputs, outputs)
    model.get_layer("d").kernel.assign(np.full((4, 3), 5.0))
    kernel, channels = weight_stats.effective_kernels(model)["d"]
    np.testing.assert_allclose(kernel, np.tanh(5.0))
    assert channels == 3
    stats = evaluate.weight_statistics(model, bins=11)
    assert sum(stats["histogram"]["counts"]) == 12
