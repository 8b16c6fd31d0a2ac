"""Datasets of the main job as `tf.data`: the bundled digits or tfds CIFAR."""

import dataclasses

import numpy as np
import tensorflow as tf

from kqrobust import datasets
from kqrobust import validation

DATASETS = ("digits", "cifar10", "cifar100")


@dataclasses.dataclass
class JobData:
    """Train/test pipelines plus what the model and export need to know."""

    train: tf.data.Dataset
    test: tf.data.Dataset
    input_shape: tuple
    num_classes: int
    steps_per_epoch: int
    calibration: np.ndarray  # a few hundred training images, for export/PTQ/probes
    calibration_labels: np.ndarray
    test_arrays: tuple  # (x, y) NumPy arrays of (part of) the test split


def _take_arrays(ds, limit):
    xs, ys = [], []
    count = 0
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        count += len(xs[-1])
        if count >= limit:
            break
    return np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]


def load_job_data(name, batch_size, data_dir=None, download=False, seed=0, eval_limit=10_000):
    """Returns `JobData` for "digits", "cifar10" or "cifar100".

    `batch_size` is the global batch. CIFAR fails within seconds with
    `kq.datasets.DatasetUnavailableError` when the data is not prepared and
    cannot be downloaded.
    """
    validation.known(name, "dataset", list(DATASETS))
    if name == "digits":
        (x_train, y_train), (x_test, y_test) = datasets.load_digits(seed=seed)
        train = (
            tf.data.Dataset.from_tensor_slices((x_train, y_train))
            .shuffle(len(x_train), seed=seed)
            .batch(batch_size)
            .prefetch(2)
        )
        test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(batch_size)
        return JobData(
            train,
            test,
            x_train.shape[1:],
            10,
            int(np.ceil(len(x_train) / batch_size)),
            x_train[:512],
            y_train[:512],
            (x_test, y_test),
        )
    train = datasets.load_cifar(
        name, "train", batch_size, data_dir=data_dir, download=download, seed=seed
    )
    test = datasets.load_cifar(name, "test", batch_size, data_dir=data_dir, download=download)
    calibration, calibration_labels = _take_arrays(
        datasets.load_cifar(name, "train", batch_size, data_dir=data_dir, training=False), 512
    )
    test_arrays = _take_arrays(test, eval_limit)
    steps = int(train.cardinality().numpy())
    if steps < 0:  # unknown (e.g. generator-backed data): count one pass
        steps = int(train.reduce(0, lambda count, _: count + 1).numpy())
    return JobData(
        train,
        test,
        (32, 32, 3),
        datasets.CIFAR_NUM_CLASSES[name],
        max(1, steps),
        calibration,
        calibration_labels,
        test_arrays,
    )
