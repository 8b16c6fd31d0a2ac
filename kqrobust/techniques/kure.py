"""KURE as a recipe technique: the kurtosis loss, averaged over the layers it regularizes.

Formulas: docs/methods.md#kure.
"""

from kqrobust.regularizers import KURE
from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import check_exclude
from kqrobust.techniques.base import check_nonnegative
from kqrobust.techniques.base import register_technique


@register_technique
class KURETechnique(Technique):
    """Kurtosis regularization: `kq.regularizers.KURE` in each hooked layer's `kernel_losses`.

    The paper's loss is `lambda * mean over layers of (Kurt(W_l) - K_T)^2`:
    each of the `L` layers the exclusions leave gets `KURE(weight=lambda /
    L)`, so the per-layer losses sum to that mean. Recipe keywords: `kure`
    (`lambda`), `kure_target`, `kure_exclude`.

    Args:
        weight: `lambda`, a float >= 0 (paper: 1.0).
        target: the target kurtosis `K_T` (1.8: a uniform distribution).
        exclude: layers without KURE (tokens or regexes, as SymReg's).
            Default: the first conv.

    References:
        Shkolnik et al., "Robust Quantization: One Model to Rule Them All",
        NeurIPS 2020, eq. 4-5.
    """

    name = "kure"
    order = 30
    fields = {"kure": None, "kure_target": 1.8, "kure_exclude": ("first_conv",)}

    def __init__(self, weight=1.0, target=1.8, exclude=("first_conv",)):
        self.weight = check_nonnegative(weight, "weight", allow_none=False)
        self.target = check_nonnegative(target, "target", allow_none=False)
        self.exclude = check_exclude(exclude, "exclude")

    @classmethod
    def from_fields(cls, kure=None, kure_target=1.8, kure_exclude=("first_conv",)):
        weight = check_nonnegative(kure, "kure")
        target = check_nonnegative(kure_target, "kure_target", allow_none=False)
        exclude = check_exclude(kure_exclude, "kure_exclude")
        return None if weight is None else cls(weight, target, exclude)

    def to_fields(self):
        return {"kure": self.weight, "kure_target": self.target, "kure_exclude": self.exclude}

    def layer_hooks(self, layers):
        names = [name for name, _, _ in layers.without(self.exclude)]
        return {
            name: {"kernel_losses": [KURE(target=self.target, weight=self.weight / len(names))]}
            for name in names
        }

    def get_config(self):
        return {"weight": self.weight, "target": self.target, "exclude": list(self.exclude)}
