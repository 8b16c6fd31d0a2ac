"""SFP as a recipe technique: FPQ's input noise on every quantized conv layer.

Formulas: docs/methods.md#sfp.
"""

from kqrobust.quantizers.lsq import LSQ
from kqrobust.techniques.base import Technique
from kqrobust.techniques.base import register_technique
from kqrobust.transforms.sfp import SFP
from kqrobust.transforms.sfp import check_probability

# The SGD weight decay of FPQ's CIFAR setup (Pang & Cai, arXiv 2503.11159).
FPQ_WEIGHT_DECAY = 5e-4


@register_technique
class SFPTechnique(Technique):
    """Stochastic feature perturbation: `kq.transforms.SFP` as each conv's `input_perturbation`.

    In training, with probability `p` per layer per step, the quantized
    input of every quantized Conv2D/DepthwiseConv2D (kind "conv" or
    "depthwise") moves by `delta ~ U[-s/2, s/2]`, `s` its LSQ input step.
    It needs an LSQ input quantizer, so a fake-quantized model. Recipe
    keyword: `sfp_p`.

    Args:
        p: the probability, a float in (0, 1] (paper: 0.1).

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv 2503.11159,
        sec. "Stochastic Feature Perturbation".
    """

    name = "sfp"
    order = 50
    fields = {"sfp_p": None}
    needs_fake_quant = "SFP's noise width is the LSQ input step of a quantized layer"
    paper_weight_decay = FPQ_WEIGHT_DECAY

    def __init__(self, p=0.1):
        self.p = check_probability(p)

    @classmethod
    def from_fields(cls, sfp_p=None):
        return None if sfp_p is None else cls(sfp_p)

    def to_fields(self):
        return {"sfp_p": self.p}

    def layer_hooks(self, layers):
        return {name: {"input_perturbation": SFP(self.p)} for name in layers.convs}

    def check_layer(self, recipe, name, hooks, input_quantizer):
        if not isinstance(hooks.get("input_perturbation"), SFP):
            return
        if not recipe.fake_quant:
            raise ValueError(
                f"Recipe '{recipe.name}' has sfp_p={self.p}, but SFP needs the "
                "LSQ input step of a quantized layer and this recipe builds a float "
                "model (fake_quant=False). Fix: use kq.quantize_model, or set sfp_p=None."
            )
        if not isinstance(input_quantizer, LSQ):
            raise ValueError(
                f"Recipe '{recipe.name}' adds SFP noise (sfp_p={self.p}) of width the "
                f"LSQ input step, but layer '{name}' has input quantizer "
                f"{type(input_quantizer).__name__ if input_quantizer else None}. Fix: use "
                "activation_quantizer='lsq' for conv layers, or set sfp_p=None."
            )

    def get_config(self):
        return {"p": self.p}
