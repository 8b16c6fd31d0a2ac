"""Hessian-vector products of a Keras model's loss (Pearlmutter 1994; PyHessian).

Formulas: docs/methods.md#hessian-probes.
"""

from kqrobust.probes.data import as_batches
from kqrobust.probes.objective import Objective


def hessian_vector_product(
    model, data, v, loss=None, variables="kernels", method="forward", batch_size=128
):
    """`H v`, the Hessian of the mean loss on `data` times a vector `v`.

    `Hv = grad(grad(L) . v)` (Pearlmutter's R-operator), computed batch by batch (the
    batch results weighted by batch size, so memory stays bounded by one
    batch) either by forward-over-reverse (`method="forward"`: a
    `tf.autodiff.ForwardAccumulator` around the gradient tape) or by nested
    tapes (`method="reverse"`). Both are exact; forward-over-reverse is the
    cheaper of the two (see `benchmarks/hessian_probe.py`).

    The loss is `loss` when given, else the model's compiled loss (data term
    only, regularizers excluded, as PyHessian), evaluated with
    `training=False` (BatchNorm moving statistics, no dropout or SFP noise).
    Quantized kqrobust layers use the straight-through form `x +
    stop_gradient(q - x)`, whose second derivatives are those of the float
    graph between the rounding points; TF's FakeQuant ops are not used, as
    their second derivatives are wrong (`tests/probes/test_quantized.py`
    shows it). Every model variable is restored afterwards.

    Args:
        model: a built Keras model (float, quantized or robustified), TF backend.
        data: `(x, y)` arrays, a `tf.data.Dataset` of `(x, y)` batches or an
            iterable of batches.
        v: one array per probed variable, with the variables' shapes.
        loss: a Keras loss (name, instance or callable), or None for the
            compiled loss.
        variables: "kernels" (default: layer kernels only), "trainable"
            (all trainable variables; LSQ steps enter with their gradient
            scale) or a list of the model's variables.
        method: "forward" (forward-over-reverse) or "reverse" (nested tapes).
        batch_size: batch size used to slice arrays.

    Returns:
        A list of tensors (the variables' dtypes), one per probed variable.

    Example: `hessian_vector_product(model, (x, y), [tf.ones_like(w) for w in
    model.trainable_variables], variables="trainable")`, run in docs/probes.md.

    References:
        Pearlmutter, "Fast exact multiplication by the Hessian", Neural
        Computation 1994 (the R-operator, eq. 4).
        Yao et al., "PyHessian", IEEE BigData 2020, sec. III.
    """
    objective = Objective(
        model, loss=loss, variables=variables, method=method, what="hessian_vector_product"
    )
    return objective.hvp(as_batches(data, batch_size), v)
