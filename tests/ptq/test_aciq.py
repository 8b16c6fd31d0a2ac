"""ACIQ: Park et al. (ECCV 2022) eq. 4 against NumPy integration, and the tabulated constants."""

import math

import numpy as np
import pytest

from kqrobust.ptq import aciq


def numpy_eq4(alpha, bits, distribution):
    """Eq. 4 by trapezoidal integration of the prior's density."""
    x = np.linspace(alpha, alpha + 60.0, 600001)
    if distribution == "laplace":
        density = 0.5 * np.exp(-np.abs(x))
    else:
        density = np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    truncation = 2 * np.trapezoid(density * (x - alpha) ** 2, x)
    return truncation + alpha**2 / (3 * 2 ** (2 * bits))


@pytest.mark.parametrize("distribution", ["laplace", "gauss"])
@pytest.mark.parametrize("alpha,bits", [(0.5, 2), (2.0, 3), (4.0, 4), (9.0, 8)])
def test_expected_error_matches_numerical_integral(distribution, alpha, bits):
    np.testing.assert_allclose(
        aciq.expected_quantization_error(alpha, bits, distribution),
        numpy_eq4(alpha, bits, distribution),
        rtol=1e-5,
    )


@pytest.mark.parametrize("distribution", ["laplace", "gauss"])
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_minimisation_reproduces_tabulated_constants_within_1_percent(distribution, bits):
    table = {
        "laplace": {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89},  # docs/methods.md#aciq
        "gauss": {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92},
    }
    found = aciq.optimal_clip_multiplier(bits, distribution)
    assert abs(found - table[distribution][bits]) <= 0.01 * table[distribution][bits]


@pytest.mark.parametrize("distribution", ["laplace", "gauss"])
@pytest.mark.parametrize("bits", [2, 5, 7])
def test_optimum_is_a_minimum_on_a_dense_grid(distribution, bits):
    grid = np.linspace(0.05, 20, 40000)
    errors = [numpy_eq4(a, bits, distribution) for a in grid[::400]]
    coarse = grid[::400][int(np.argmin(errors))]
    found = aciq.optimal_clip_multiplier(bits, distribution)
    assert abs(found - coarse) < 0.2
    for delta in (-0.05, 0.05):
        assert aciq.expected_quantization_error(
            found, bits, distribution
        ) <= aciq.expected_quantization_error(found + delta, bits, distribution)


def test_multiplier_uses_the_table_then_the_optimum():
    assert aciq.aciq_multiplier(4, "laplace") == 5.03
    assert aciq.aciq_multiplier(2, "gauss") == 1.71
    assert aciq.aciq_multiplier(6, "laplace") == pytest.approx(
        aciq.optimal_clip_multiplier(6, "laplace")
    )
    # Unsigned b bits take the constant of b + 1 bits.
    assert aciq.aciq_multiplier(3, "gauss", signed=False) == 2.55
    assert aciq.aciq_multiplier(8, "laplace", signed=False) == pytest.approx(
        aciq.optimal_clip_multiplier(9, "laplace")
    )
    assert aciq.aciq_multiplier(6, "laplace") < aciq.aciq_multiplier(7, "laplace")


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: aciq.aciq_multiplier(4, "cauchy"), "distribution must be one of"),
        (lambda: aciq.optimal_clip_multiplier(0), "bits must be an int in"),
        (lambda: aciq.optimal_clip_multiplier(4.0), "bits must be an int in"),
    ],
)
def test_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()
