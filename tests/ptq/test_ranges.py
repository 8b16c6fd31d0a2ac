"""Range rules against independent NumPy implementations: min-max, ACIQ (Banner
et al., NeurIPS 2019) and MSE search, on LSQ's grid (Esser et al., ICLR 2020)."""

import numpy as np
import pytest

from kqrobust import ops
from kqrobust.ptq import ranges
from kqrobust.ptq.aciq import optimal_clip_multiplier

LAPLACE_K = {2: 2.83, 3: 3.89, 4: 5.03, 8: 9.89}
GAUSS_K = {2: 1.71, 3: 2.15, 4: 2.55, 8: 3.92}
GRIDS = [
    (4, True, True),
    (3, True, False),
    (2, True, True),
    (8, True, True),
    (8, False, False),
    (3, False, False),
]


def levels(bits, signed, narrow):
    """Signed: [-2^(b-1), 2^(b-1) - 1]; narrow range only drops -128 at 8 bits."""
    if not signed:
        return 0, 2**bits - 1
    qp = 2 ** (bits - 1) - 1
    return (qp if narrow and bits == 8 else qp + 1), qp


def banner_step(alpha, bits, signed, narrow):
    """The step of the grid ACIQ's alpha is derived for: 2^M levels over
    [-alpha, alpha] (255 for 8-bit narrow-range weights); unsigned, 2^b levels
    over [0, alpha] (the (b+1)-bit two-sided grid)."""
    if not signed:
        return alpha / 2**bits
    count = 255 if narrow and bits == 8 else 2**bits
    return 2 * alpha / count


def sample(signed, seed=0, shape=(300, 5)):
    rng = np.random.default_rng(seed)
    x = rng.laplace(0.1, 0.3, size=shape) * rng.uniform(0.5, 2.0, size=shape[1])
    return np.maximum(x, 0.0) if not signed else x


def reference_minmax(column, bits, signed, narrow):
    qn, qp = levels(bits, signed, narrow)
    step = column.max() / qp
    if qn:
        step = max(step, -column.min() / qn)
    return step


def reference_quantize(column, step, bits, signed, narrow):
    qn, qp = levels(bits, signed, narrow)
    return np.array([min(max(round(v / step), -qn), qp) * step for v in column])


@pytest.mark.parametrize("bits,signed,narrow", GRIDS)
def test_minmax(bits, signed, narrow):
    x = sample(signed)
    expected = [reference_minmax(x[:, c], bits, signed, narrow) for c in range(x.shape[1])]
    np.testing.assert_allclose(ranges.minmax_step(x, bits, signed, narrow), expected, rtol=1e-12)


@pytest.mark.parametrize("bits,signed,narrow", [g for g in GRIDS if g[0] in (2, 3, 4, 8)])
@pytest.mark.parametrize("distribution", ["laplace", "gauss"])
def test_aciq(bits, signed, narrow, distribution):
    x = sample(signed, seed=1)
    rule = ranges.aciq_laplace_step if distribution == "laplace" else ranges.aciq_gauss_step
    table = LAPLACE_K if distribution == "laplace" else GAUSS_K
    expected = []
    for c in range(x.shape[1]):
        col = x[:, c]
        if distribution == "laplace":
            scale = np.mean(np.abs(col - col.mean()))
        else:
            scale = np.sqrt(np.mean((col - col.mean()) ** 2))
        k = table.get(bits if signed else bits + 1)
        if k is None:  # unsigned 8 bits: the 9-bit optimum (checked in test_aciq)
            k = optimal_clip_multiplier(bits + 1, distribution)
        alpha = abs(col.mean()) + k * scale
        expected.append(
            min(
                banner_step(alpha, bits, signed, narrow),
                reference_minmax(col, bits, signed, narrow),
            )
        )
    np.testing.assert_allclose(rule(x, bits, signed, narrow), expected, rtol=1e-10)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_aciq_step_splits_the_clip_range_into_2_to_the_b_levels(bits):
    """Signed b-bit, Laplace: s = alpha / 2^(b-1) (Banner et al.'s Delta =
    2 * alpha / 2^M), so at 2 bits the grid {-2, -1, 0, 1} * s reaches -alpha.
    Unsigned: s = alpha / 2^b."""
    x = np.random.default_rng(6).laplace(0.0, 1.0, size=(100000, 2))
    alpha = LAPLACE_K[bits] * np.mean(np.abs(x - x.mean(0)), axis=0) + np.abs(x.mean(0))
    np.testing.assert_allclose(
        ranges.aciq_laplace_step(x, bits), alpha / 2 ** (bits - 1), rtol=1e-10
    )
    np.testing.assert_allclose(ranges.aciq_step(alpha, bits, signed=False), alpha / 2**bits)


def test_aciq_clips_heavy_tails_and_never_exceeds_minmax():
    x = sample(True, seed=2, shape=(5000, 3))
    x[0] = 50.0  # an outlier per channel
    aciq = ranges.aciq_laplace_step(x, 4)
    assert np.all(aciq < ranges.minmax_step(x, 4) / 5)
    constant = np.full((10, 2), -0.3)  # no spread: the grid still reaches the value
    for rule in (ranges.aciq_gauss_step, ranges.aciq_laplace_step):
        np.testing.assert_allclose(rule(constant, 4), ranges.minmax_step(constant, 4))


@pytest.mark.parametrize("bits,signed,narrow", GRIDS)
def test_mse_search(bits, signed, narrow):
    x = sample(signed, seed=3, shape=(200, 4))
    k_count = 40
    expected = []
    for c in range(x.shape[1]):
        col = x[:, c]
        top = reference_minmax(col, bits, signed, narrow)
        errors = []
        for k in range(1, k_count + 1):
            step = top * k / k_count
            errors.append(np.sum((col - reference_quantize(col, step, bits, signed, narrow)) ** 2))
        expected.append(top * (int(np.argmin(errors)) + 1) / k_count)
    found = ranges.mse_step(x, bits, signed, narrow, num_candidates=k_count)
    np.testing.assert_allclose(found, expected, rtol=1e-12)


def test_mse_is_no_worse_than_minmax_and_aciq():
    x = sample(True, seed=4, shape=(2000, 3))

    def error(step):
        return np.sum((x - ranges.grid_quantize(x, step, 3)) ** 2, axis=0)

    best = error(ranges.mse_step(x, 3, num_candidates=400))
    assert np.all(best <= error(ranges.minmax_step(x, 3)) + 1e-12)
    assert np.all(best <= error(ranges.aciq_laplace_step(x, 3)) * 1.01)


@pytest.mark.parametrize("bits,signed,narrow", GRIDS)
def test_grid_quantize_matches_lsq_op(bits, signed, narrow):
    x = sample(signed, seed=5).astype("float32")
    step = ranges.minmax_step(x, bits, signed, narrow).astype("float32") * 0.7
    np.testing.assert_allclose(
        ranges.grid_quantize(x, step, bits, signed, narrow),
        np.asarray(ops.lsq_quantize(x, step, bits, signed=signed, narrow_range=narrow)),
        rtol=1e-6,
        atol=1e-7,
    )


def test_zero_columns_keep_a_positive_step():
    x = np.zeros((10, 3))
    for rule in ranges.RANGE_RULES.values():
        assert np.all(rule(x, 4) > 0)


def test_as_columns_puts_one_step_per_column():
    kernel = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    columns = ranges.as_columns(kernel, 5)
    assert columns.shape == (24, 5)
    np.testing.assert_array_equal(columns[:, 2], kernel[..., 2].ravel())
    depthwise = ranges.as_columns(kernel, 20)
    np.testing.assert_array_equal(depthwise[:, 7], kernel[:, :, 1, 2].ravel())
