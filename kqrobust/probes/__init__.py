"""Hessian probes and generalization measures (METHODS.md sec. 7-8).

Every probe differentiates the mean data loss (the compiled loss, or
`loss=`) with `training=False`, batch by batch, and restores the model's
variables afterwards. TensorFlow backend only.
"""

from kqrobust.probes.eigen import Eigenpair
from kqrobust.probes.eigen import top_hessian_eigenvalue
from kqrobust.probes.gradient import gradient_norm
from kqrobust.probes.hutchinson import TraceEstimate
from kqrobust.probes.hutchinson import hessian_trace
from kqrobust.probes.hvp import hessian_vector_product
from kqrobust.probes.objective import Objective

__all__ = [
    "Eigenpair",
    "Objective",
    "TraceEstimate",
    "gradient_norm",
    "hessian_trace",
    "hessian_vector_product",
    "top_hessian_eigenvalue",
]
