"""Hessian probes and generalization measures (docs/methods.md#hessian-probes).

Every probe differentiates the mean data loss (the compiled loss, or
`loss=`) with `training=False`, batch by batch, and restores the model's
variables afterwards. TensorFlow backend only.
"""

from kqrobust.probes.bisection import BisectionResult
from kqrobust.probes.corruptions import CORRUPTIONS
from kqrobust.probes.corruptions import corrupt
from kqrobust.probes.eigen import Eigenpair
from kqrobust.probes.eigen import top_hessian_eigenvalue
from kqrobust.probes.flatness import pac_bayes_sigma
from kqrobust.probes.generalization import generalization_gap
from kqrobust.probes.generalization import generalization_measures
from kqrobust.probes.gradient import gradient_norm
from kqrobust.probes.hutchinson import TraceEstimate
from kqrobust.probes.hutchinson import hessian_trace
from kqrobust.probes.hvp import hessian_vector_product
from kqrobust.probes.objective import Objective
from kqrobust.probes.perturbation import perturbation_targets
from kqrobust.probes.robustness import corruption_robustness
from kqrobust.probes.sharpness import sharpness_alpha

__all__ = [
    "BisectionResult",
    "CORRUPTIONS",
    "Eigenpair",
    "Objective",
    "TraceEstimate",
    "corrupt",
    "corruption_robustness",
    "generalization_gap",
    "generalization_measures",
    "gradient_norm",
    "hessian_trace",
    "hessian_vector_product",
    "pac_bayes_sigma",
    "perturbation_targets",
    "sharpness_alpha",
    "top_hessian_eigenvalue",
]
