"""Fixtures of the probe tests: a tiny model with its explicit Hessian."""

import pytest

from kqrobust.testing.hessian import explicit_hessian
from kqrobust.testing.hessian import tiny_data
from kqrobust.testing.hessian import tiny_mlp


@pytest.fixture(scope="module")
def tiny():
    """`(model, x, y, H)` for the float64 tiny MLP."""
    model = tiny_mlp()
    x, y = tiny_data()
    return model, x, y, explicit_hessian(model, x, y)
