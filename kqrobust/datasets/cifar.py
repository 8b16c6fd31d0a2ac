"""CIFAR-10/100 through tensorflow-datasets, with the papers' augmentation.

Augmentation (LSQ, FPQ and SymReg papers' CIFAR setup): random crop of 32x32
from the image zero-padded by 4 pixels, random horizontal flip; then
per-channel normalisation with the training-set mean and std.
"""

import tensorflow as tf

from kqrobust import validation
from kqrobust.datasets.availability import DatasetUnavailableError
from kqrobust.datasets.availability import host_reachable
from kqrobust.datasets.availability import unavailable_message

CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
# Per-channel training-set statistics of the RGB images in [0, 1].
CIFAR_MEAN = {"cifar10": (0.4914, 0.4822, 0.4465), "cifar100": (0.5071, 0.4865, 0.4409)}
CIFAR_STD = {"cifar10": (0.2470, 0.2435, 0.2616), "cifar100": (0.2673, 0.2564, 0.2762)}
DOWNLOAD_HOST = "www.cs.toronto.edu"


def _check_name(name):
    validation.known(name, "CIFAR dataset", sorted(CIFAR_NUM_CLASSES))


def load_tfds_split(name, split, data_dir=None, download=False):
    """`tfds.load(name, split, as_supervised=True)` that fails in seconds offline.

    Raises:
        DatasetUnavailableError: the data is not prepared in `data_dir` and
            `download` is False or the download host cannot be reached.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "Loading CIFAR needs tensorflow-datasets. Fix: pip install 'kqrobust[data]'."
        ) from err
    try:
        return tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, download=False)
    except (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError) as err:
        not_prepared = err
    if not download:
        raise DatasetUnavailableError(
            unavailable_message(name, data_dir, "it is not prepared there and download=False")
        ) from not_prepared
    if not host_reachable(DOWNLOAD_HOST):
        raise DatasetUnavailableError(
            unavailable_message(
                name,
                data_dir,
                f"it is not prepared and {DOWNLOAD_HOST} cannot be reached (no network)",
            )
        ) from not_prepared
    return tfds.load(name, split=split, data_dir=data_dir, as_supervised=True, download=True)


def augment(image, label, pad=4):
    """Random crop after zero-padding by `pad`, then a random horizontal flip."""
    size = tf.shape(image)
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]])
    image = tf.image.random_crop(padded, size)
    return tf.image.random_flip_left_right(image), label


def load_cifar(
    name="cifar10",
    split="train",
    batch_size=128,
    data_dir=None,
    download=False,
    training=None,
    shuffle_buffer=10_000,
    seed=None,
):
    """A batched, normalised CIFAR `tf.data.Dataset` of `(image, label)`.

    Args:
        name: "cifar10" or "cifar100".
        split: a TFDS split ("train", "test", "train[:90%]", ...).
        batch_size: the global batch size.
        data_dir: where prepared TFDS data lives (`tfds build` output).
        download: allow a download when the data is missing and the network
            is reachable.
        training: shuffle and augment; defaults to `split` starting with
            "train".
        shuffle_buffer: shuffle buffer size in training.
        seed: shuffle/augmentation seed.

    Returns:
        A `tf.data.Dataset` of float32 images `(B, 32, 32, 3)` and int32 labels.
    """
    _check_name(name)
    training = split.startswith("train") if training is None else training
    ds = load_tfds_split(name, split, data_dir=data_dir, download=download)
    mean = tf.constant(CIFAR_MEAN[name])
    std = tf.constant(CIFAR_STD[name])

    def to_float(image, label):
        return tf.cast(image, tf.float32) / 255.0, tf.cast(label, tf.int32)

    def normalize(image, label):
        return (image - mean) / std, label

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed)
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=training).prefetch(tf.data.AUTOTUNE)
