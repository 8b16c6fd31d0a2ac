"""SymReg as a recipe technique: the symmetry losses on the kernels its exclusions leave.

Formulas: docs/methods.md#symreg.
"""

from kqrobust.regularizers import SymReg
from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import check_exclude
from kqrobust.techniques.base import check_nonnegative
from kqrobust.techniques.base import register_technique


def _check_pair(symreg):
    if symreg is None:
        return None
    if not isinstance(symreg, (tuple, list)) or len(symreg) != 2:
        raise ValueError(
            "symreg must be None or a pair (lambda1, lambda2) of floats >= 0, "
            f"e.g. (0.1, 0.1). Received: symreg={symreg!r}"
        )
    return tuple(check_nonnegative(v, "symreg", allow_none=False) for v in symreg)


@register_technique
class SymRegTechnique(Technique):
    """Symmetry regularization: `kq.regularizers.SymReg` in each hooked layer's `kernel_losses`.

    The loss `lambda1 * L_sym1 + lambda2 * L_sym2` of each layer's `f(W)`
    (after SatNL), per output channel. Recipe keywords: `symreg=(lambda1,
    lambda2)`, `symreg_exclude`.

    Args:
        lambda1: weight of `L_sym1`, a float >= 0 (paper: 0.1).
        lambda2: weight of `L_sym2`, a float >= 0 (paper: 0.1).
        exclude: layers without SymReg: tokens `"depthwise"`, `"first_conv"`,
            `"last_dense"` or layer-name regexes. Default: depthwise kernels
            and the last Dense layer.

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, sec. 3.4, eq. 7-10.
    """

    name = "symreg"
    order = 20
    fields = {"symreg": None, "symreg_exclude": ("depthwise", "last_dense")}

    def __init__(self, lambda1=0.1, lambda2=0.1, exclude=("depthwise", "last_dense")):
        self.lambda1 = check_nonnegative(lambda1, "lambda1", allow_none=False)
        self.lambda2 = check_nonnegative(lambda2, "lambda2", allow_none=False)
        self.exclude = check_exclude(exclude, "exclude")

    @classmethod
    def from_fields(cls, symreg=None, symreg_exclude=("depthwise", "last_dense")):
        pair = _check_pair(symreg)
        exclude = check_exclude(symreg_exclude, "symreg_exclude")
        return None if pair is None else cls(*pair, exclude=exclude)

    def to_fields(self):
        return {"symreg": (self.lambda1, self.lambda2), "symreg_exclude": self.exclude}

    def layer_hooks(self, layers):
        return {
            name: {"kernel_losses": [SymReg(self.lambda1, self.lambda2, channel_axis=axes)]}
            for name, _, axes in layers.without(self.exclude)
        }

    def get_config(self):
        return {"lambda1": self.lambda1, "lambda2": self.lambda2, "exclude": list(self.exclude)}
