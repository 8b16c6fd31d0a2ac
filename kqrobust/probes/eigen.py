"""The top Hessian eigenvalue by power iteration (Yao et al., "PyHessian", 2020).

Formulas: docs/methods.md#hessian-probes.
"""

import dataclasses

import keras
import numpy as np

from kqrobust import validation
from kqrobust.probes.data import as_batches
from kqrobust.probes.data import numpy_rng
from kqrobust.probes.objective import Objective


@dataclasses.dataclass(frozen=True)
class Eigenpair:
    """The dominant eigenvalue of the loss Hessian and its eigenvector.

    Attributes:
        eigenvalue: the Rayleigh quotient `v^T H v` at the last iterate.
        eigenvector: one NumPy array per probed variable (unit norm overall).
        iterations: the number of Hessian-vector products used.
        converged: True if the relative change fell below `tol`.
    """

    eigenvalue: float
    eigenvector: list
    iterations: int
    converged: bool

    def __float__(self):
        return float(self.eigenvalue)


def _normalize(vector):
    norm = np.sqrt(sum(float(np.sum(np.square(v))) for v in vector))
    if norm == 0.0:
        raise ValueError(
            "The Hessian-vector product is zero: the loss has no curvature "
            "with respect to the probed variables (e.g. a linear model with a "
            "linear loss)."
        )
    return [v / norm for v in vector]


def top_hessian_eigenvalue(
    model,
    data,
    max_iterations=100,
    tol=1e-3,
    loss=None,
    variables="kernels",
    method="forward",
    batch_size=128,
    seed=None,
    verbose=1,
):
    """The eigenvalue of largest magnitude of the loss Hessian, by power iteration.

    From a random unit vector, repeat `v <- Hv / ||Hv||` and report the
    Rayleigh quotient `v^T H v`, stopping (as PyHessian) when it changes by
    less than `tol` relative to the previous one. Near a minimum the Hessian
    is close to positive semidefinite, so this is the top eigenvalue;
    otherwise it is the one of largest magnitude, sign included. Same loss,
    mode and weight choices as `hessian_trace`.

    Args:
        model: a built Keras model (float, quantized or robustified), TF backend.
        data: `(x, y)` arrays, a `tf.data.Dataset` of `(x, y)` batches or an
            iterable of batches.
        max_iterations: the most Hessian-vector products (PyHessian: 100).
        tol: relative change of the eigenvalue that stops the iteration.
        loss: a Keras loss, or None for the compiled loss.
        variables: "kernels" (default), "trainable" (LSQ steps enter with their
            gradient scale) or a list of the model's variables.
        method: "forward" (forward-over-reverse) or "reverse" (nested tapes).
        batch_size: batch size used to slice arrays.
        seed: int seed of the starting vector (None: random).
        verbose: 1 shows a Keras progress bar, 0 is silent.

    Returns:
        An `Eigenpair` (`eigenvalue`, `eigenvector`, `iterations`,
        `converged`); `float(result)` is the eigenvalue.

    Example: `top_hessian_eigenvalue(model, (x, y), seed=0).eigenvalue`, run
    in docs/probes.md.

    References:
        Yao et al., "PyHessian", IEEE BigData 2020, Algorithm 1.
    """
    validation.positive_int(max_iterations, "max_iterations")
    validation.non_negative(tol, "tol")
    objective = Objective(
        model, loss=loss, variables=variables, method=method, what="top_hessian_eigenvalue"
    )
    batches = as_batches(data, batch_size)
    rng = numpy_rng(seed)
    vector = _normalize(
        [rng.standard_normal(tuple(v.shape)).astype("float32") for v in objective.variables]
    )
    progbar = keras.utils.Progbar(max_iterations, unit_name="iteration") if verbose else None
    eigenvalue, converged, iterations = None, False, 0
    for iterations in range(1, max_iterations + 1):
        product = [np.asarray(t) for t in objective.hvp(batches, vector)]
        new_value = sum(float(np.sum(p * v)) for p, v in zip(product, vector))
        vector = _normalize(product)
        if progbar is not None:
            progbar.update(iterations, [("eigenvalue", new_value)])
        done = (
            eigenvalue is not None and abs(new_value - eigenvalue) / (abs(eigenvalue) + 1e-6) < tol
        )
        eigenvalue = new_value
        if done:
            converged = True
            break
    if progbar is not None and iterations < max_iterations:
        progbar.update(iterations, finalize=True)
    return Eigenpair(
        eigenvalue=eigenvalue, eigenvector=vector, iterations=iterations, converged=converged
    )
