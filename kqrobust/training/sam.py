"""SAM and ASAM's pure helpers, kept importable here; their home is `kq.techniques.sam`."""

from kqrobust.techniques.sam import all_reduce_gradients
from kqrobust.techniques.sam import perturbed_variables
from kqrobust.techniques.sam import sam_perturbation

__all__ = ["all_reduce_gradients", "perturbed_variables", "sam_perturbation"]
