"""Datasets: tfds CIFAR-10/100 (real loading code) and the bundled digits (offline default)."""

from kqrobust.datasets.availability import DatasetUnavailableError
from kqrobust.datasets.cifar import CIFAR_NUM_CLASSES
from kqrobust.datasets.cifar import augment
from kqrobust.datasets.cifar import load_cifar
from kqrobust.datasets.digits import load_digits

__all__ = ["CIFAR_NUM_CLASSES", "DatasetUnavailableError", "augment", "load_cifar", "load_digits"]
