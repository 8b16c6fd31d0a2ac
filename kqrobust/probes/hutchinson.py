"""Hutchinson's estimate of the Hessian trace (Yao et al., "PyHessian", IEEE BigData 2020).

Formulas: docs/methods.md#hessian-probes.
"""

import dataclasses
import math

import keras
import numpy as np

from kqrobust import validation
from kqrobust.probes.data import as_batches
from kqrobust.probes.data import numpy_rng
from kqrobust.probes.objective import Objective


@dataclasses.dataclass(frozen=True)
class TraceEstimate:
    """A Hutchinson estimate of `Tr(H)`.

    Attributes:
        estimate: the mean of the probes `v_i^T H v_i`.
        std_error: its standard error, `std(samples, ddof=1) / sqrt(n)`
            (NaN with one probe).
        num_probes: the number of probes used.
        converged: True if the relative change of the running mean fell
            below `tol` before `max_probes`.
        samples: the individual `v_i^T H v_i`.
    """

    estimate: float
    std_error: float
    num_probes: int
    converged: bool
    samples: tuple

    def __float__(self):
        return float(self.estimate)


def rademacher(rng, shapes):
    """One Rademacher vector (entries +1 or -1), one float32 array per shape."""
    return [rng.integers(0, 2, size=shape).astype("float32") * 2.0 - 1.0 for shape in shapes]


def _check_counts(tol, max_probes, min_probes):
    validation.non_negative(tol, "tol")
    validation.positive_int(max_probes, "max_probes")
    validation.positive_int(min_probes, "min_probes")


def hessian_trace(
    model,
    data,
    tol=1e-3,
    max_probes=100,
    min_probes=5,
    loss=None,
    variables="kernels",
    method="forward",
    batch_size=128,
    seed=None,
    verbose=1,
):
    """Hutchinson's estimate of the trace of the loss Hessian.

    `Tr(H) ~ mean_i v_i^T H v_i` with Rademacher `v_i` (Hutchinson 1990),
    each `v_i^T H v_i` over the whole of `data` (batch by batch). Probing
    stops, as PyHessian, when the running mean changes by less than `tol`
    relative to its previous value, but not before `min_probes` probes (so
    the standard error rests on a few samples), and at most after
    `max_probes`.

    Loss and mode: `loss` when given, else the model's compiled loss (the
    data term only: regularizers are excluded, as in PyHessian), evaluated
    with `training=False` so BatchNorm uses (and keeps) its moving statistics
    and dropout/SFP noise is off. Quantized kqrobust layers are
    differentiated through their straight-through form, which gives correct
    second derivatives (TF's FakeQuant ops do not). Model variables are
    restored afterwards.

    Args:
        model: a built Keras model (float, quantized or robustified), TF backend.
        data: `(x, y)` arrays, a `tf.data.Dataset` of `(x, y)` batches or an
            iterable of batches.
        tol: relative change of the running mean that stops probing.
        max_probes: the most probes to draw (PyHessian: 100).
        min_probes: the fewest probes to draw (capped at `max_probes`).
        loss: a Keras loss, or None for the compiled loss.
        variables: "kernels" (default: Conv2D, DepthwiseConv2D and Dense
            kernels), "trainable" (every trainable variable, BatchNorm and
            LSQ steps included; the steps enter with LSQ's gradient scale
            `g`, i.e. their Hessian entries times `g^2`) or a list of the
            model's variables.
        method: "forward" (forward-over-reverse) or "reverse" (nested tapes).
        batch_size: batch size used to slice arrays.
        seed: int seed of the probe vectors (None: random).
        verbose: 1 shows a Keras progress bar over probes, 0 is silent.

    Returns:
        A `TraceEstimate` (`estimate`, `std_error`, `num_probes`, `converged`,
        `samples`); `float(result)` is the estimate.

    Example: `hessian_trace(model, (x, y), max_probes=20, seed=0).estimate`,
    run in docs/probes.md.

    References:
        Hutchinson, "A stochastic estimator of the trace of the influence
        matrix for Laplacian smoothing splines", 1990 (the estimator).
        Yao et al., "PyHessian", IEEE BigData 2020, Algorithm 2.
    """
    _check_counts(tol, max_probes, min_probes)
    objective = Objective(
        model, loss=loss, variables=variables, method=method, what="hessian_trace"
    )
    return trace_of(
        objective,
        as_batches(data, batch_size),
        tol=tol,
        max_probes=max_probes,
        min_probes=min_probes,
        seed=seed,
        verbose=verbose,
    )


def trace_of(objective, batches, tol=1e-3, max_probes=100, min_probes=5, seed=None, verbose=0):
    """Hutchinson's estimate for an existing `Objective` (callbacks reuse theirs)."""
    _check_counts(tol, max_probes, min_probes)
    rng = numpy_rng(seed)
    shapes = [tuple(v.shape) for v in objective.variables]
    progbar = keras.utils.Progbar(max_probes, unit_name="probe") if verbose else None
    samples, previous, converged = [], None, False
    for i in range(max_probes):
        samples.append(objective.vhv(batches, rademacher(rng, shapes)))
        mean = float(np.mean(samples))
        if progbar is not None:
            progbar.update(i + 1, [("trace", mean)])
        if (
            len(samples) >= min(min_probes, max_probes)
            and previous is not None
            and abs(mean - previous) / (abs(previous) + 1e-6) < tol
        ):
            converged = True
            break
        previous = mean
    if progbar is not None and len(samples) < max_probes:
        progbar.update(len(samples), finalize=True)
    n = len(samples)
    std_error = float(np.std(samples, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return TraceEstimate(
        estimate=float(np.mean(samples)),
        std_error=std_error,
        num_probes=n,
        converged=converged,
        samples=tuple(samples),
    )
