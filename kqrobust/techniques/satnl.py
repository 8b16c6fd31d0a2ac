"""SatNL as a recipe technique: `alpha * tanh(W / alpha)` on every quantized kernel.

Formulas: docs/methods.md#satnl.
"""

from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import register_technique
from kqrobust.transforms.satnl import SatNL
from kqrobust.transforms.satnl import check_alpha


@register_technique
class SatNLTechnique(Technique):
    """Saturating nonlinearity on the weights: every quantized layer's `weight_transform`.

    Each quantized layer computes with `f(W) = alpha * tanh(W / alpha)`
    (`kq.transforms.SatNL`); its weight quantizer and SymReg see `f(W)`.
    Recipe keyword: `satnl_alpha`.

    Args:
        alpha: the scale, a float > 0 (the paper's plain tanh: 1.0).

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, sec. 3.2-3.3.
    """

    name = "satnl"
    order = 10
    fields = {"satnl_alpha": None}

    def __init__(self, alpha=1.0):
        self.alpha = check_alpha(alpha)

    @classmethod
    def from_fields(cls, satnl_alpha=None):
        return None if satnl_alpha is None else cls(satnl_alpha)

    def to_fields(self):
        return {"satnl_alpha": self.alpha}

    def layer_hooks(self, layers):
        return {name: {"weight_transform": SatNL(self.alpha)} for name in layers.names}

    def get_config(self):
        return {"alpha": self.alpha}
