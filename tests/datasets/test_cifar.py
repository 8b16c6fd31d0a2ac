"""The real tfds CIFAR code path under tfds.testing.mock_data, and the offline failure."""

import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from kqrobust import datasets
from kqrobust.datasets import availability
from kqrobust.datasets import cifar


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_load_cifar_under_mock_data(name, classes, tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        train = datasets.load_cifar(name, "train", batch_size=8, data_dir=str(tmp_path), seed=0)
        test = datasets.load_cifar(name, "test", batch_size=8, data_dir=str(tmp_path))
        x, y = next(iter(train))
        xt, _ = next(iter(test))
    assert x.shape == (8, 32, 32, 3) and x.dtype == tf.float32
    assert y.dtype == tf.int32 and 0 <= int(tf.reduce_min(y)) and int(tf.reduce_max(y)) < classes
    # Normalised: (image/255 - mean)/std keeps values within these bounds.
    lo = (0 - max(cifar.CIFAR_MEAN[name])) / min(cifar.CIFAR_STD[name])
    hi = (1 - min(cifar.CIFAR_MEAN[name])) / min(cifar.CIFAR_STD[name])
    assert lo - 1e-5 <= float(tf.reduce_min(x)) and float(tf.reduce_max(xt)) <= hi + 1e-5
    assert datasets.CIFAR_NUM_CLASSES[name] == classes


def test_augment_crops_with_padding_and_flips():
    image = tf.reshape(tf.range(32 * 32 * 3, dtype=tf.float32), (32, 32, 3))
    tf.random.set_seed(0)
    outputs = [datasets.augment(image, 0)[0].numpy() for _ in range(20)]
    assert all(o.shape == (32, 32, 3) for o in outputs)
    # Some crops shift the image (zeros from the padding appear), some flip it.
    assert any((o == 0).sum() > 3 for o in outputs)
    flipped = image.numpy()[:, ::-1]
    assert (
        any(np.array_equal(o, flipped) for o in outputs) or len({o.tobytes() for o in outputs}) > 5
    )


def test_missing_data_without_download_fails_in_seconds(tmp_path):
    start = time.monotonic()
    with pytest.raises(
        datasets.DatasetUnavailableError, match="not prepared there and download=False.*Fix:"
    ):
        datasets.load_cifar("cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - start < 30


def test_missing_data_with_download_but_no_network_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "host_reachable", lambda host: False)
    with pytest.raises(datasets.DatasetUnavailableError, match="cannot be reached"):
        datasets.load_cifar("cifar100", data_dir=str(tmp_path), download=True)


def test_host_probe_answers_quickly_for_a_closed_port():
    start = time.monotonic()
    assert not availability.host_reachable("127.0.0.1", port=9, timeout=1.0)
    assert time.monotonic() - start < 5


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="Unknown CIFAR dataset: 'cifar1000'"):
        datasets.load_cifar("cifar1000")
