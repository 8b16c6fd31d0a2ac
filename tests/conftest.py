"""Test configuration: quiet TF logs, a fixed seed, shared digits data."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402

from kqrobust.datasets import load_digits  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """`(x_train, y_train), (x_test, y_test)` of the bundled digits."""
    return load_digits()


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1337)
