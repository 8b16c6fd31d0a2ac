"""`Recipe`: what `quantize_model` builds and how the model trains.

A recipe is a plain serializable object validated in `__init__`; presets are
recipes registered by name (`kq.configs.get_recipe("lsq")`).
"""

import keras

from kqrobust import quantizers as quantizers_lib
from kqrobust.api_export import kqrobust_export
from kqrobust.quantizers.base import check_bits
from kqrobust.transforms.satnl import check_alpha
from kqrobust.transforms.sfp import check_probability

SAM_METHODS = ("sam", "asam")
# Default rho per method (METHODS.md sec. 6): SAM 0.05 (Foret et al.), ASAM
# 0.5 (Kwon et al., CIFAR-10).
DEFAULT_RHO = {"sam": 0.05, "asam": 0.5}
# Exclusion tokens; any other string is a layer-name regex (re.fullmatch).
EXCLUDE_TOKENS = ("depthwise", "first_conv", "last_dense")


def _check_nonnegative(value, name, allow_none=True):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a float >= 0. Received: {name}={value!r}")
    return float(value)


def _check_symreg(symreg):
    if symreg is None:
        return None
    if (not isinstance(symreg, (tuple, list)) or len(symreg) != 2):
        raise ValueError(
            "symreg must be None or a pair (lambda1, lambda2) of floats >= 0, "
            f"e.g. (0.1, 0.1). Received: symreg={symreg!r}")
    return tuple(_check_nonnegative(v, "symreg", allow_none=False) for v in symreg)


def _check_exclude(exclude, name):
    if isinstance(exclude, str) or not isinstance(exclude, (tuple, list)) or not all(
            isinstance(e, str) for e in exclude):
        raise ValueError(
            f"{name} must be a tuple of strings: tokens {list(EXCLUDE_TOKENS)} or "
            f"layer-name regexes. Received: {name}={exclude!r}")
    return tuple(exclude)


@kqrobust_export
class Recipe:
    """A quantization recipe.

    Args:
        name: the recipe's name (a preset's name, or "custom").
        weight_quantizer: quantizer of the weights: a name, dict or instance
            (`kq.quantizers.get`); its bits and axes are set per layer.
        activation_quantizer: quantizer of the layer inputs, or None to keep
            activations float (the paper's "W4/FP").
        weight_bits: default weight bit-width, an int in [2, 8].
        activation_bits: default activation bit-width, an int in [2, 8].
        first_last_bits: bit-width of the first and last quantized layers
            (weights and input), or None to treat them as the others.
        fake_quant: False builds a float model with the robust-training
            hooks only (what `kq.robustify` uses).
        satnl_alpha: SatNL's `alpha` (`f(W) = alpha * tanh(W / alpha)` on
            every quantized layer's kernel), or None for no SatNL.
        symreg: `(lambda1, lambda2)` of SymReg, or None.
        symreg_exclude: layers without SymReg: tokens `"depthwise"`,
            `"first_conv"`, `"last_dense"` or layer-name regexes. Default:
            depthwise kernels and the last Dense layer (seed 002).
        kure: KURE's `lambda` (the loss is `lambda * mean over layers of
            (Kurt - kure_target)^2`), or None.
        kure_target: KURE's target kurtosis (1.8: uniform).
        kure_exclude: layers without KURE (as `symreg_exclude`). Default:
            the first conv.
        sam: None, `"sam"` or `"asam"`: sharpness-aware training step.
        rho: the (A)SAM radius; None takes 0.05 for SAM and 0.5 for ASAM.
        eta: ASAM's `T = |w| + eta`.
        sfp_p: FPQ's SFP probability per conv layer per step, or None.
        csd_weight: weight of FPQ's CSD distillation loss, or None.
        description: one line for docs and `repr`.

    Example:
        >>> recipe = kq.Recipe(weight_bits=3, activation_bits=4)
        >>> qmodel = kq.quantize_model(model, recipe=recipe)
    """

    def __init__(
        self,
        name="custom",
        weight_quantizer="lsq",
        activation_quantizer="lsq",
        weight_bits=4,
        activation_bits=4,
        first_last_bits=8,
        fake_quant=True,
        satnl_alpha=None,
        symreg=None,
        symreg_exclude=("depthwise", "last_dense"),
        kure=None,
        kure_target=1.8,
        kure_exclude=("first_conv",),
        sam=None,
        rho=None,
        eta=0.01,
        sfp_p=None,
        csd_weight=None,
        description="",
    ):
        self.name = str(name)
        self.weight_quantizer = quantizers_lib.serialize(
            quantizers_lib.get(weight_quantizer))
        self.activation_quantizer = (
            None if activation_quantizer is None else quantizers_lib.serialize(
                quantizers_lib.get(activation_quantizer)))
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.activation_bits = check_bits(activation_bits, "activation_bits")
        self.first_last_bits = (
            None if first_last_bits is None
            else check_bits(first_last_bits, "first_last_bits"))
        self.fake_quant = bool(fake_quant)
        self.satnl_alpha = None if satnl_alpha is None else check_alpha(satnl_alpha)
        self.symreg = _check_symreg(symreg)
        self.symreg_exclude = _check_exclude(symreg_exclude, "symreg_exclude")
        self.kure = _check_nonnegative(kure, "kure")
        self.kure_target = _check_nonnegative(kure_target, "kure_target", allow_none=False)
        self.kure_exclude = _check_exclude(kure_exclude, "kure_exclude")
        if sam is not None and sam not in SAM_METHODS:
            raise ValueError(
                f"sam must be None, 'sam' or 'asam'. Received: sam={sam!r}")
        self.sam = sam
        if sam is None:
            self.rho = _check_nonnegative(rho, "rho")
        else:
            self.rho = _check_nonnegative(DEFAULT_RHO[sam] if rho is None else rho, "rho")
            if not self.rho > 0:
                raise ValueError(f"rho must be > 0 with sam={sam!r}. Received: rho={rho!r}")
        self.eta = _check_nonnegative(eta, "eta", allow_none=False)
        self.sfp_p = None if sfp_p is None else check_probability(sfp_p)
        self.csd_weight = _check_nonnegative(csd_weight, "csd_weight")
        self.description = str(description)

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return Recipe.from_config({**self.get_config(), **changes})

    def get_config(self):
        return {
            "name": self.name,
            "weight_quantizer": self.weight_quantizer,
            "activation_quantizer": self.activation_quantizer,
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "first_last_bits": self.first_last_bits,
            "fake_quant": self.fake_quant,
            "satnl_alpha": self.satnl_alpha,
            "symreg": self.symreg,
            "symreg_exclude": self.symreg_exclude,
            "kure": self.kure,
            "kure_target": self.kure_target,
            "kure_exclude": self.kure_exclude,
            "sam": self.sam,
            "rho": self.rho,
            "eta": self.eta,
            "sfp_p": self.sfp_p,
            "csd_weight": self.csd_weight,
            "description": self.description,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Recipe) and self.get_config() == other.get_config()

    def __repr__(self):
        return (f"Recipe(name={self.name!r}, weight_bits={self.weight_bits}, "
                f"activation_bits={self.activation_bits})")


PRESETS = {}


def register_preset(recipe):
    """Registers `recipe` under `recipe.name`; returns it."""
    PRESETS[recipe.name] = recipe
    return recipe


register_preset(Recipe(
    name="lsq",
    description="LSQ learned step sizes for weights and activations "
    "(Esser et al., ICLR 2020).",
))
register_preset(Recipe(
    name="satnl",
    satnl_alpha=1.0,
    description="LSQ + SatNL weights alpha*tanh(W/alpha), alpha=1 (seed 002, sec. 3.3).",
))
register_preset(Recipe(
    name="symreg",
    symreg=(0.1, 0.1),
    description="LSQ + SymReg, lambda1=lambda2=0.1 (seed 002, eq. 7-10).",
))
register_preset(Recipe(
    name="kure",
    kure=1.0,
    description="LSQ + KURE, lambda=1, K_T=1.8 (Shkolnik et al., NeurIPS 2020).",
))
register_preset(Recipe(
    name="sam",
    sam="sam",
    rho=0.05,
    description="LSQ + SAM, rho=0.05 (Foret et al., ICLR 2021).",
))
register_preset(Recipe(
    name="asam",
    sam="asam",
    rho=0.5,
    eta=0.01,
    description="LSQ + ASAM, rho=0.5, eta=0.01 (Kwon et al., ICML 2021; CIFAR-10).",
))
register_preset(Recipe(
    name="robust",
    satnl_alpha=1.0,
    symreg=(0.1, 0.1),
    sam="asam",
    rho=1.0,
    eta=0.01,
    description="SymReg + SatNL + ASAM (rho=1, eta=0.01): seed 002's 'All'.",
))
register_preset(Recipe(
    name="robust+kure",
    satnl_alpha=1.0,
    symreg=(0.1, 0.1),
    kure=1.0,
    sam="asam",
    rho=1.0,
    eta=0.01,
    description="seed 002's 'KURE + All': SymReg + SatNL + ASAM + KURE (lambda=1).",
))
register_preset(Recipe(
    name="fpq",
    sfp_p=0.1,
    csd_weight=1.0,
    description="LSQ + SFP (p=0.1) + CSD (weight 1) from the float teacher "
    "(FPQ, arXiv 2503.11159).",
))
register_preset(Recipe(
    name="minmax",
    weight_quantizer=quantizers_lib.MinMax(symmetric=True),
    activation_quantizer="ema_minmax",
    description="tfmot-style baseline: per-channel last-value min-max weights, "
    "EMA min-max activations.",
))


def get_recipe(identifier):
    """Returns a `Recipe` from a preset name, a dict or an instance."""
    if isinstance(identifier, Recipe):
        return identifier
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            return keras.saving.deserialize_keras_object(
                identifier, module_objects={"Recipe": Recipe})
        return Recipe.from_config(identifier)
    if isinstance(identifier, str):
        if identifier not in PRESETS:
            raise ValueError(
                f"Unknown recipe: '{identifier}'. Presets: {sorted(PRESETS)}. "
                "Pass one of these names, a dict or a kq.Recipe.")
        return PRESETS[identifier]
    raise ValueError(
        "recipe must be a preset name, a dict or a kq.Recipe. "
        f"Received: recipe={identifier!r}")
