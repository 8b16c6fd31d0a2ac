"""Corruptions against NumPy formulas, and the distorted-data evaluation."""

import colorsys

import keras
import numpy as np
import pytest

from kqrobust import probes
from kqrobust.probes import corruptions as C


def _images(channels=1, n=4, size=8, seed=0):
    return np.random.default_rng(seed).random((n, size, size, channels)).astype("float32")


def test_gaussian_noise_matches_numpy():
    x = _images()
    out = probes.corrupt(x, "gaussian_noise", 3, seed=5)
    noise = np.random.default_rng(5).standard_normal(x.shape) * C.GAUSSIAN_NOISE_STD[2]
    np.testing.assert_allclose(out, np.clip(x + noise.astype("float32"), 0, 1), atol=1e-6)


@pytest.mark.parametrize("severity", [1, 5])
@pytest.mark.parametrize("channels", [1, 3])
def test_gaussian_blur_matches_numpy(severity, channels):
    x = _images(channels)
    sigma = C.GAUSSIAN_BLUR_SIGMA[severity - 1]
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    padded = np.pad(
        x.astype("float64"), [(0, 0), (radius, radius), (radius, radius), (0, 0)], mode="symmetric"
    )
    expected = np.zeros_like(x, dtype="float64")
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            patch = padded[:, i : i + 2 * radius + 1, j : j + 2 * radius + 1, :]
            expected[:, i, j, :] = np.einsum("nabc,a,b->nc", patch, k, k)
    np.testing.assert_allclose(probes.corrupt(x, "gaussian_blur", severity), expected, atol=1e-5)
    flat = np.full_like(x, 0.3)
    np.testing.assert_allclose(probes.corrupt(flat, "gaussian_blur", severity), flat, atol=1e-6)


def test_contrast_and_grayscale_brightness_match_numpy():
    x = _images()
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(
        probes.corrupt(x, "contrast", 2), np.clip((x - mean) * 0.5 + mean, 0, 1), atol=1e-6
    )
    np.testing.assert_allclose(
        probes.corrupt(x, "brightness", 4), np.clip(x + 0.2, 0, 1), atol=1e-6
    )


def test_rgb_brightness_shifts_the_hsv_value():
    x = _images(channels=3, n=1, size=2)
    out = probes.corrupt(x, "brightness", 5)
    for pixel, result in zip(x.reshape(-1, 3), out.reshape(-1, 3)):
        h, s, v = colorsys.rgb_to_hsv(*pixel)
        np.testing.assert_allclose(result, colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0)), atol=1e-5)


def test_jpeg_degrades_with_severity():
    x = np.clip(np.cumsum(_images(channels=3, n=8, size=16), axis=1) / 8, 0, 1)
    errors = [np.mean((probes.corrupt(x, "jpeg", s) - x) ** 2) for s in (1, 5)]
    assert 0 < errors[0] < errors[1] < 0.05


def test_value_range_round_trip():
    x = _images() * 2.0 - 1.0
    out = probes.corrupt(x, "contrast", 1, value_range=(-1.0, 1.0))
    expected = (
        np.clip(
            ((x + 1) / 2 - ((x + 1) / 2).mean((1, 2, 3), keepdims=True)) * 0.75
            + ((x + 1) / 2).mean((1, 2, 3), keepdims=True),
            0,
            1,
        )
    ) * 2 - 1
    np.testing.assert_allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "fog"}, "Unknown corruption: 'fog'"),
        ({"severity": 6}, "severity must be an int in \\[1, 5\\]. Received: severity=6"),
        ({"images": np.zeros((2, 8, 8, 2))}, "C 1 or 3. Received: shape \\(2, 8, 8, 2\\)"),
        ({"value_range": (1, 0)}, "value_range must be"),
    ],
)
def test_corrupt_errors(kwargs, message):
    args = {"images": _images(), "name": "contrast", "severity": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        probes.corrupt(**args)


def test_corruption_robustness_on_digits(digits):
    (x_train, y_train), (x_test, y_test) = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_train, y_train, epochs=5, batch_size=64, verbose=0)
    x_test, y_test = x_test[:150], y_test[:150]
    result = probes.corruption_robustness(model, (x_test, y_test), severities=[1, 5], verbose=0)
    clean = np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test)
    assert result["clean_accuracy"] == pytest.approx(clean)
    assert set(result["accuracy"]) == set(C.CORRUPTIONS)
    index = sorted(C.CORRUPTIONS).index("gaussian_noise")  # seeds: seed + 1000 * i + severity
    noisy = probes.corrupt(x_test, "gaussian_noise", 5, seed=1000 * index + 5)
    assert result["accuracy"]["gaussian_noise"][1] == pytest.approx(
        np.mean(np.argmax(model.predict(noisy, verbose=0), -1) == y_test)
    )
    assert result["accuracy"]["contrast"][1] < result["accuracy"]["contrast"][0] <= clean + 0.02
    assert result["mean_corruption_accuracy"] == pytest.approx(
        np.mean([np.mean(v) for v in result["accuracy"].values()])
    )
    with pytest.raises(ValueError, match="severities must be a non-empty list"):
        probes.corruption_robustness(model, (x_test, y_test), severities=[0], verbose=0)
