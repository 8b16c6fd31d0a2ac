"""Layer hooks: SatNL (`weight_transform`) and SFP (`input_perturbation`)."""

from kqrobust.transforms.satnl import SatNL
from kqrobust.transforms.sfp import SFP
from kqrobust.transforms.sfp import sfp_noise

__all__ = ["SFP", "SatNL", "sfp_noise"]
