"""Range rules: the step of an LSQ grid from calibration values (NumPy).

Every rule takes a 2-D array `x` of shape `(N, C)` (one column per step:
a weight channel, or a single column for a per-tensor activation) and the
grid (`bits`, `signed`, `narrow_range`, as `kq.ops.quant_levels`), and
returns one positive step per column. Min-max and MSE search the step
directly; ACIQ picks a clipping threshold `alpha` and sets the step of the
grid it was derived for (`aciq_step`). No rule clips beyond the min-max
range.

The grid is the one `kq.quantizers.FixedRange` applies:
`x_hat = round(clip(x / s, -Qn, Qp)) * s`.

Formulas: docs/methods.md#ptq.
"""

import numpy as np

from kqrobust.ops.lsq import quant_levels
from kqrobust.ptq.aciq import aciq_multiplier

MIN_STEP = 1e-8


def grid_quantize(x, step, bits, signed=True, narrow_range=True):
    """NumPy `round(clip(x / s, -Qn, Qp)) * s` (round half to even, as TF)."""
    qn, qp = quant_levels(bits, signed, narrow_range)
    return np.round(np.clip(x / step, -qn, qp)) * step


def minmax_step(x, bits, signed=True, narrow_range=True):
    """The smallest step whose grid covers `[min(x), max(x)]` of each column.

    `s = max(max(x) / Qp, -min(x) / Qn)` (`Qn = 0`: the negative side is
    clipped to 0 anyway).
    """
    qn, qp = quant_levels(bits, signed, narrow_range)
    step = np.max(x, axis=0) / qp
    if qn:
        step = np.maximum(step, -np.min(x, axis=0) / qn)
    return np.maximum(step, MIN_STEP)


def aciq_step(alpha, bits, signed=True, narrow_range=True):
    """The step of the grid ACIQ's clipping threshold `alpha` is derived for.

    Banner et al. split the clipping range into the grid's `2^M` levels:
    step `2 * alpha / 2^M` over `[-alpha, alpha]`, rounding error
    `alpha^2 / (3 * 4^M)` (their eq. 5). With `L = Qn + Qp + 1` levels:
      - signed: `s = 2 * alpha / L`, i.e. `alpha / 2^(b-1)` on the full
        `b`-bit grid (`2 * alpha / 255` for 8-bit narrow-range weights);
      - unsigned: `s = alpha / L = alpha / 2^b` over `[0, alpha]`, the step of
        the `b + 1`-bit two-sided grid whose constant `aciq_multiplier`
        uses.

    References:
        Banner et al., "Post training 4-bit quantization of convolutional
        networks for rapid-deployment", NeurIPS 2019, sec. 3, eq. 5.
    """
    qn, qp = quant_levels(bits, signed, narrow_range)
    levels = qn + qp + 1
    return (2.0 if signed else 1.0) * np.asarray(alpha, np.float64) / levels


def _aciq_step(x, bits, signed, narrow_range, distribution):
    mean = np.mean(x, axis=0)
    if distribution == "laplace":
        scale = np.mean(np.abs(x - mean), axis=0)
    else:
        scale = np.std(x, axis=0)
    alpha = np.abs(mean) + aciq_multiplier(bits, distribution, signed) * scale
    step = np.minimum(
        aciq_step(alpha, bits, signed, narrow_range), minmax_step(x, bits, signed, narrow_range)
    )
    return np.maximum(step, MIN_STEP)


def aciq_laplace_step(x, bits, signed=True, narrow_range=True):
    """ACIQ Laplace: clip at `k_b * b` from the mean, `b = E|x - mu|`.

    The prior is centred on the mean `mu` and clipped to `mu +- k_b * b`;
    the grid is symmetric about 0, so its end is `alpha = |mu| + k_b * b`
    (for weights `mu` is about 0: Banner et al.'s `alpha = k_b * b`). The step
    is `aciq_step(alpha)`, capped at the min-max step. `k_b` is
    `aciq_multiplier(bits, "laplace", signed)`.
    """
    return _aciq_step(x, bits, signed, narrow_range, "laplace")


def aciq_gauss_step(x, bits, signed=True, narrow_range=True):
    """ACIQ Gaussian: `alpha = |mu| + k_b * std(x)`; step `aciq_step(alpha)`,
    capped at the min-max step."""
    return _aciq_step(x, bits, signed, narrow_range, "gauss")


def mse_step(x, bits, signed=True, narrow_range=True, num_candidates=100):
    """The step minimising `||x - Q(x)||^2` per column, by grid search.

    Candidates are `s_k = s_minmax * k / K` for `k = 1..K`; the search keeps,
    for each column, the first candidate with the smallest error.

    Args:
        x: array of shape `(N, C)`.
        bits, signed, narrow_range: the grid.
        num_candidates: `K`.
    """
    top = minmax_step(x, bits, signed, narrow_range)
    best_step = top.copy()
    best_error = np.full(top.shape, np.inf)
    for k in range(1, num_candidates + 1):
        step = top * (k / num_candidates)
        error = np.sum((x - grid_quantize(x, step, bits, signed, narrow_range)) ** 2, axis=0)
        better = error < best_error
        best_error = np.where(better, error, best_error)
        best_step = np.where(better, step, best_step)
    return np.maximum(best_step, MIN_STEP)


RANGE_RULES = {
    "minmax": minmax_step,
    "aciq_laplace": aciq_laplace_step,
    "aciq_gauss": aciq_gauss_step,
    "mse": mse_step,
}


def as_columns(values, num_steps):
    """Reshapes a tensor whose trailing axes hold `num_steps` steps to `(N, C)`.

    Kernels keep their channel axes last (Conv2D, Dense: the output channel;
    DepthwiseConv2D: `(in, multiplier)`), and activations use one step
    (`num_steps=1`).
    """
    return np.asarray(values, dtype="float64").reshape(-1, num_steps)
