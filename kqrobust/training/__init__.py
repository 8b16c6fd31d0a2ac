"""The quantized model class, whose training step runs the recipe's techniques (`kq.techniques`)."""

from kqrobust.recalibration import initialize_activation_steps
from kqrobust.recalibration import recalibrate_batchnorm
from kqrobust.training.csd import csd_loss
from kqrobust.training.csd import standardize_channels
from kqrobust.training.optimizers import SGDWithL2
from kqrobust.training.quant_model import QuantModel
from kqrobust.training.sam import all_reduce_gradients
from kqrobust.training.sam import perturbed_variables
from kqrobust.training.sam import sam_perturbation

__all__ = [
    "QuantModel",
    "SGDWithL2",
    "all_reduce_gradients",
    "csd_loss",
    "initialize_activation_steps",
    "perturbed_variables",
    "recalibrate_batchnorm",
    "sam_perturbation",
    "standardize_channels",
]
