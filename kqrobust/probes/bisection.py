"""The bisection search behind QGen's flatness and sharpness measures."""

import dataclasses

from kqrobust import validation


@dataclasses.dataclass(frozen=True)
class BisectionResult:
    """The outcome of `bisect_displacement`.

    Attributes:
        value: the perturbation scale found (`sigma'` or `alpha'`).
        displacement: the displacement measured at `value`.
        iterations: the number of scales evaluated.
        converged: True if the displacement came within `tol` of the target.
        history: `(scale, displacement)` for every evaluation, in order.
    """

    value: float
    displacement: float
    iterations: int
    converged: bool
    history: tuple


def check_search(target, lower, upper, depth, tol):
    """Validates the search settings (raises `ValueError`)."""
    validation.positive(target, "target")
    if not (
        isinstance(lower, (int, float)) and isinstance(upper, (int, float)) and 0 <= lower < upper
    ):
        raise ValueError(
            "The search interval must satisfy 0 <= lower < upper. Received: "
            f"lower={lower!r}, upper={upper!r}"
        )
    validation.positive_int(depth, "depth")
    validation.non_negative(tol, "tol")


def bisect_displacement(
    displacement, target=0.1, lower=0.0, upper=2.0, depth=15, tol=1e-2, progbar=None
):
    """The largest scale whose displacement stays at the target, by bisection.

    As in QGen's reference code: evaluate the midpoint; stop if its
    displacement is within `tol` of `target`; otherwise move the upper bound
    down when the displacement is too large, the lower bound up when it is
    too small; at most `depth` evaluations. The result is the last midpoint.

    Args:
        displacement: a function of the scale, increasing in expectation
            (an accuracy drop or a loss increase).
        target: the displacement sought (QGen: 0.1).
        lower: the lower end of the search interval (QGen: 0).
        upper: the upper end of the search interval (QGen: 2).
        depth: the most evaluations (QGen: 15).
        tol: the accepted distance to `target` (QGen: 1e-2).
        progbar: a `keras.utils.Progbar` advanced once per evaluation, or None.

    Returns:
        A `BisectionResult`.

    References:
        Jiang et al., "Fantastic generalization measures and where to find
        them", ICLR 2020 (the PAC-Bayes and sharpness searches);
        AskariHemmat et al., "QGen: On the Ability to Generalize in
        Quantization Aware Training", arXiv:2404.11769, 2024. See
        docs/methods.md#generalization-measures.
    """
    check_search(target, lower, upper, depth, tol)
    history = []
    scale, value = None, None
    for _ in range(depth):
        scale = (lower + upper) / 2.0
        value = float(displacement(scale))
        history.append((scale, value))
        if progbar is not None:
            progbar.add(1, [("scale", scale), ("displacement", value)])
        if abs(value - target) < tol:
            return BisectionResult(scale, value, len(history), True, tuple(history))
        if value > target:
            upper = scale
        else:
            lower = scale
    return BisectionResult(scale, value, len(history), False, tuple(history))
