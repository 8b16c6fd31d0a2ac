"""Distorted-data evaluation: five corruptions at five severities (QGen; Hendrycks & Dietterich).

Every corruption is written with TF image ops (no download) and works on
batches of images in `[0, 1]`, channels last, any size, 1 or 3 channels.
Severity constants are those of CIFAR-10-C (Hendrycks and Dietterich, 2019),
which were chosen for small (32x32) images.
"""

import math

import numpy as np
import tensorflow as tf

from kqrobust import validation
from kqrobust.probes.data import numpy_rng

# CIFAR-10-C constants, severity 1..5.
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
JPEG_QUALITY = (80, 65, 58, 50, 40)


def gaussian_noise(images, severity, rng):
    """`clip(x + N(0, std^2))`."""
    std = GAUSSIAN_NOISE_STD[severity - 1]
    noise = rng.standard_normal(images.shape).astype("float32") * std
    return tf.clip_by_value(images + noise, 0.0, 1.0)


def gaussian_kernel(sigma):
    """A normalized 1-D Gaussian of radius `ceil(3 sigma)`."""
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = np.arange(-radius, radius + 1, dtype="float64")
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (kernel / kernel.sum()).astype("float32")


def gaussian_blur(images, severity, rng=None):
    """Separable Gaussian blur (reflected borders), per channel."""
    kernel = gaussian_kernel(GAUSSIAN_BLUR_SIGMA[severity - 1])
    radius = len(kernel) // 2
    channels = images.shape[-1]
    x = tf.pad(images, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="SYMMETRIC")
    rows = tf.tile(tf.reshape(kernel, (-1, 1, 1, 1)), (1, 1, channels, 1))
    cols = tf.tile(tf.reshape(kernel, (1, -1, 1, 1)), (1, 1, channels, 1))
    x = tf.nn.depthwise_conv2d(x, rows, (1, 1, 1, 1), "VALID")
    x = tf.nn.depthwise_conv2d(x, cols, (1, 1, 1, 1), "VALID")
    return tf.clip_by_value(x, 0.0, 1.0)


def contrast(images, severity, rng=None):
    """`clip((x - mean) * c + mean)`, the mean per image over pixels and channels."""
    factor = CONTRAST_FACTOR[severity - 1]
    mean = tf.reduce_mean(images, axis=(1, 2, 3), keepdims=True)
    return tf.clip_by_value((images - mean) * factor + mean, 0.0, 1.0)


def brightness(images, severity, rng=None):
    """Adds to the HSV value channel (RGB) or to the intensity (grayscale)."""
    shift = BRIGHTNESS_SHIFT[severity - 1]
    if images.shape[-1] == 3:
        hsv = tf.image.rgb_to_hsv(images)
        value = tf.clip_by_value(hsv[..., 2:] + shift, 0.0, 1.0)
        return tf.image.hsv_to_rgb(tf.concat([hsv[..., :2], value], axis=-1))
    return tf.clip_by_value(images + shift, 0.0, 1.0)


@tf.function(reduce_retracing=True)
def _jpeg_batch(images, quality):
    return tf.map_fn(lambda image: tf.image.adjust_jpeg_quality(image, quality), images)


def jpeg(images, severity, rng=None):
    """JPEG compression at the severity's quality (`tf.image.adjust_jpeg_quality`)."""
    return _jpeg_batch(images, tf.constant(JPEG_QUALITY[severity - 1]))


CORRUPTIONS = {
    "gaussian_noise": gaussian_noise,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
}


def corrupt(images, name, severity, value_range=(0.0, 1.0), seed=0):
    """Applies one corruption to a batch of images.

    Args:
        images: float array `(N, H, W, C)`, `C` 1 or 3, values in `value_range`.
        name: one of `CORRUPTIONS` ("gaussian_noise", "gaussian_blur",
            "contrast", "brightness", "jpeg").
        severity: an int in [1, 5].
        value_range: `(low, high)` of the images; they are mapped to [0, 1],
            corrupted and mapped back.
        seed: int seed of the random corruptions (Gaussian noise).

    Returns:
        A float32 NumPy array of the same shape.

    Example:
        >>> images = np.full((2, 8, 8, 1), 0.5, "float32")
        >>> corrupt(images, "brightness", severity=3).shape
        (2, 8, 8, 1)

    References:
        Hendrycks and Dietterich, "Benchmarking neural network robustness to
        common corruptions and perturbations", ICLR 2019 (CIFAR-10-C).
    """
    if name not in CORRUPTIONS:
        raise ValueError(
            f"Unknown corruption: '{name}'. Choose from {sorted(CORRUPTIONS)}. "
            f"Received: name={name!r}"
        )
    validation.int_in_range(severity, "severity", 1, 5)
    images = np.asarray(images, "float32")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            "Corruptions need images of shape (N, H, W, C) with C 1 or 3. "
            f"Received: shape {images.shape}."
        )
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(
            f"value_range must be (low, high) with high > low. "
            f"Received: value_range={value_range!r}"
        )
    unit = tf.constant((images - low) / (high - low))
    out = CORRUPTIONS[name](unit, severity, numpy_rng(seed))
    return (np.asarray(out, "float32") * (high - low) + low).astype("float32")
