"""ACIQ: analytical clipping for a Laplace or Gaussian prior.

The clipping threshold `alpha` of a `b`-bit uniform grid over `[-alpha,
alpha]` minimises the expected squared error, truncation plus rounding:

    E(alpha) = 2 * integral_alpha^inf f(x) (x - alpha)^2 dx + alpha^2 / (3 * 2^(2b))

The rounding term is `Delta^2 / 12` for the step `Delta = 2 * alpha / 2^b`
of `2^b` levels over `[-alpha, alpha]`: that is the step the PTQ range rules
set from `alpha` (`kq.ptq.ranges.aciq_step`; `alpha / 2^(b-1)` on the signed
`b`-bit grid).

For a unit-scale prior the optimum is a constant `k_b`, and `alpha = k_b * b`
(Laplace scale `b = E|x - mu|`) or `alpha = k_b * sigma` (Gaussian). The
truncation integral has a closed form for both priors:
  - Laplace(0, 1): `2 * exp(-alpha)`;
  - Normal(0, 1):  `2 * ((1 + alpha^2) * Q(alpha) - alpha * phi(alpha))`, with
    `Q` the upper tail and `phi` the density.

References:
    Banner et al., "Post training 4-bit quantization of convolutional
    networks for rapid-deployment", NeurIPS 2019, eq. 5 and 8. Park et al.,
    "Symmetry Regularization and Saturating Nonlinearity for Robust
    Quantization", ECCV 2022, eq. 4.

Formulas: docs/methods.md#aciq.
"""

import math

from kqrobust import validation

DISTRIBUTIONS = ("laplace", "gauss")

# Banner et al.'s optimal multipliers (NeurIPS 2019), by bit-width.
ACIQ_CONSTANTS = {
    "laplace": {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89},
    "gauss": {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92},
}

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def _check_distribution(distribution):
    validation.one_of(distribution, "distribution", DISTRIBUTIONS)


def _truncation_error(alpha, distribution):
    if distribution == "laplace":
        return 2.0 * math.exp(-alpha)
    tail = 0.5 * math.erfc(alpha / math.sqrt(2.0))
    density = math.exp(-0.5 * alpha * alpha) / math.sqrt(2.0 * math.pi)
    return 2.0 * ((1.0 + alpha * alpha) * tail - alpha * density)


def expected_quantization_error(alpha, bits, distribution="laplace"):
    """Park et al. (ECCV 2022) eq. 4 for a unit-scale prior: truncation plus
    rounding error.

    Args:
        alpha: clipping threshold in units of the prior's scale (`b` for
            Laplace, `sigma` for Gaussian), >= 0.
        bits: bit-width of the grid over `[-alpha, alpha]` (2^bits levels).
        distribution: "laplace" or "gauss".

    Returns:
        `E[(x - Q(x))^2]` as a float.

    References:
        Park et al., "Symmetry Regularization and Saturating Nonlinearity for
        Robust Quantization", ECCV 2022, eq. 4. Banner et al., "Post training
        4-bit quantization of convolutional networks for rapid-deployment",
        NeurIPS 2019 (ACIQ), eq. 5 and 8.
    """
    _check_distribution(distribution)
    return _truncation_error(alpha, distribution) + alpha * alpha / (3.0 * 4.0**bits)


def optimal_clip_multiplier(bits, distribution="laplace", tol=1e-9):
    """Minimises `expected_quantization_error` over `alpha` numerically.

    `E(alpha)` is unimodal on `[0, 64]` for both priors (convex rounding term,
    decreasing convex truncation term), so a golden-section search finds the
    minimum.

    Args:
        bits: int in [1, 16].
        distribution: "laplace" or "gauss".
        tol: width of the final bracket.

    Returns:
        `k_b`, the optimal `alpha` in units of the prior's scale.

    Example:
        >>> round(optimal_clip_multiplier(4, "laplace"), 2)
        5.03
    """
    _check_distribution(distribution)
    validation.int_in_range(bits, "bits", 1, 16)
    lo, hi = 0.0, 64.0
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa = expected_quantization_error(a, bits, distribution)
    fb = expected_quantization_error(b, bits, distribution)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = expected_quantization_error(a, bits, distribution)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = expected_quantization_error(b, bits, distribution)
    return 0.5 * (lo + hi)


def aciq_multiplier(bits, distribution="laplace", signed=True):
    """`k_b` of ACIQ: the tabulated constant, else the numerical optimum.

    A one-sided (unsigned) grid of `2^b` levels over `[0, alpha]` has the
    rounding step of a two-sided grid of `2^(b+1)` levels over `[-alpha,
    alpha]` and one tail, so it takes the constant of `b + 1` bits (ACIQ's
    "positive" tables).

    Args:
        bits: int in [2, 8].
        distribution: "laplace" or "gauss".
        signed: False for a grid over non-negative values (after ReLU).

    Returns:
        The clipping multiplier `k_b` (a float).

    Example:
        >>> aciq_multiplier(4, "gauss")
        2.55
    """
    _check_distribution(distribution)
    effective_bits = bits if signed else bits + 1
    table = ACIQ_CONSTANTS[distribution]
    if effective_bits in table:
        return table[effective_bits]
    return optimal_clip_multiplier(effective_bits, distribution)
