"""`Recipe`: what `quantize_model` builds and how the model trains.

A recipe is a plain serializable object validated in `__init__`: the
quantizers and bit-widths, plus the training techniques
(`kq.techniques`), each a registered component that plugs into the layer
hooks or the train step. Presets are recipes registered by name
(`kq.configs.get_recipe("lsq")`).
"""

import keras

from kqrobust import quantizers as quantizers_lib
from kqrobust import techniques as techniques_lib
from kqrobust.api_export import kqrobust_export
from kqrobust.quantizers.base import check_bits
from kqrobust.techniques.base import RECIPE_ARGUMENTS
from kqrobust.techniques.sam import DEFAULT_RHO  # noqa: F401 - kept importable from here
from kqrobust.techniques.sam import SAM_METHODS  # noqa: F401


def _techniques(fields, techniques):
    """The recipe's techniques: the keyword-form ones by `Technique.order`, then the listed ones."""
    unknown = sorted(f for f in fields if techniques_lib.field_owner(f) is None)
    if unknown:
        known = [f for cls in techniques_lib.registered() for f in cls.fields]
        raise ValueError(
            f"Recipe got unknown arguments {unknown}. It takes {list(RECIPE_ARGUMENTS)} "
            f"and the techniques' keywords {known}. Fix: check the spelling, or pass a "
            "kq.techniques.Technique in techniques=[...]."
        )
    if isinstance(techniques, (str, dict, techniques_lib.Technique)) or not isinstance(
        techniques, (list, tuple)
    ):
        raise ValueError(
            "techniques must be a list of kq.techniques.Technique (or registered names, or "
            f"their dicts). Received: techniques={techniques!r}"
        )
    out = []
    for cls in techniques_lib.registered():
        if cls.fields:
            technique = cls.from_fields(**{f: fields[f] for f in cls.fields if f in fields})
            if technique is not None:
                out.append(technique)
    by_keyword = {t.name for t in out}
    listed = [techniques_lib.get(t) for t in techniques]
    for technique in listed:
        if techniques_lib.registered_as(technique.name) is not type(technique):
            raise ValueError(
                f"{type(technique).__name__} is not a registered technique, so a recipe "
                "holding it could not be saved and loaded. Fix: decorate the class with "
                "@kq.techniques.register_technique."
            )
        if technique.name in by_keyword or sum(t.name == technique.name for t in listed) > 1:
            raise ValueError(
                f"Recipe got technique '{technique.name}' twice ({technique.describe()}). "
                "Fix: give each technique once, as a keyword or in techniques=[...]."
            )
    # The keyword-form techniques serialize as keywords, by `Technique.order`;
    # putting them there now makes a recipe and its reloaded copy identical.
    order = {cls.name: i for i, cls in enumerate(techniques_lib.registered())}
    merged = sorted(out + [t for t in listed if t.fields], key=lambda t: order[t.name])
    merged += [t for t in listed if not t.fields]
    gradient_steps = [t.name for t in merged if t.computes_gradients]
    if len(gradient_steps) > 1:
        raise ValueError(
            f"Recipe got {len(gradient_steps)} techniques that compute the step's gradients "
            f"({gradient_steps}); a training step takes one. Fix: keep one of them."
        )
    return tuple(merged)


def _kept_fields(fields, techniques):
    """The keywords given for techniques that are off, where they differ from the default.

    `Recipe(rho=0.2)` keeps `rho` (`recipe.rho`, `get_config`), so
    `recipe.replace(sam="asam")` perturbs with the radius that was given, and
    the recipe's config round-trips what was passed.
    """
    on = {t.name for t in techniques}
    kept = {}
    for field, value in fields.items():
        owner = techniques_lib.field_owner(field)
        value = tuple(value) if isinstance(value, list) else value  # JSON turns tuples to lists
        if owner.name not in on and value != owner.fields[field]:
            kept[field] = value
    return kept


@kqrobust_export
class Recipe:
    """A quantization recipe: quantizers, bit-widths and training techniques.

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
        fake_quant: False builds a float model with the techniques' layer
            hooks only (what `kq.robustify` uses).
        techniques: training techniques (`kq.techniques.Technique`
            instances, registered names or their dicts), applied in order.
        description: one line for docs and `repr`.
        **fields: the built-in techniques' keyword form; each keyword
            belongs to one registered technique (`kq.techniques`):
            - `satnl_alpha`: SatNL's `alpha` (`f(W) = alpha * tanh(W /
              alpha)` on every quantized layer's kernel), or None.
            - `symreg`: `(lambda1, lambda2)` of SymReg, or None;
              `symreg_exclude`: layers without SymReg (tokens
              `"depthwise"`, `"first_conv"`, `"last_dense"` or layer-name
              regexes; default: depthwise kernels and the last Dense).
            - `kure`: KURE's `lambda` (the loss is `lambda * mean over layers
              of (Kurt - kure_target)^2`), or None; `kure_target` (1.8:
              uniform); `kure_exclude` (default: the first conv).
            - `sam`: None, `"sam"` or `"asam"`; `rho`, the radius (None: 0.05
              for SAM, 0.5 for ASAM); `eta`, ASAM's `T = |w| + eta`.
            - `sfp_p`: FPQ's SFP probability per conv layer per step, or None.
            - `csd_weight`: weight of FPQ's CSD distillation loss, or None.
            A technique's other keywords take effect only when its first one
            (the switch) is set; given without it they are kept
            (`recipe.<keyword>` and `get_config` return them, so
            `Recipe(rho=0.2).replace(sam="asam")` trains with rho 0.2).

    Example:
        >>> recipe = kq.Recipe(weight_bits=3, activation_bits=4, satnl_alpha=1.0)
        >>> recipe.technique("satnl")
        SatNLTechnique(alpha=1.0)

    Then `kq.quantize_model(model, recipe=recipe)`.

    References:
        The techniques' papers: see each class in `kq.techniques`.
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
        techniques=(),
        description="",
        **fields,
    ):
        self.name = str(name)
        self.weight_quantizer = quantizers_lib.serialize(quantizers_lib.get(weight_quantizer))
        self.activation_quantizer = (
            None
            if activation_quantizer is None
            else quantizers_lib.serialize(quantizers_lib.get(activation_quantizer))
        )
        self.weight_bits = check_bits(weight_bits, "weight_bits")
        self.activation_bits = check_bits(activation_bits, "activation_bits")
        self.first_last_bits = (
            None if first_last_bits is None else check_bits(first_last_bits, "first_last_bits")
        )
        self.fake_quant = bool(fake_quant)
        self.techniques = _techniques(fields, techniques)
        self._kept_fields = _kept_fields(fields, self.techniques)
        self.description = str(description)

    def technique(self, name):
        """The recipe's technique registered as `name` ("sam", "csd", ...), or None."""
        return next((t for t in self.techniques if t.name == name), None)

    def __getattr__(self, field):
        # The techniques' keywords (`recipe.sam`, `recipe.rho`): the technique's
        # value, or, when the recipe does not use it, the value given (else
        # the keyword's default).
        owner = None if field.startswith("_") else techniques_lib.field_owner(field)
        if owner is None:
            raise AttributeError(f"'Recipe' object has no attribute '{field}'")
        return self._fields_of(owner)[field]

    def _fields_of(self, owner):
        """Technique class `owner`'s keywords: its technique's, else the kept or default ones."""
        technique = self.__dict__.get("techniques") and self.technique(owner.name)
        if technique:
            return technique.to_fields()
        kept = self.__dict__.get("_kept_fields", {})
        return {f: kept.get(f, default) for f, default in owner.fields.items()}

    def replace(self, **changes):
        """A copy with some fields changed (validated again)."""
        return Recipe.from_config({**self.get_config(), **changes})

    def get_config(self):
        config = {
            "name": self.name,
            "weight_quantizer": self.weight_quantizer,
            "activation_quantizer": self.activation_quantizer,
            "weight_bits": self.weight_bits,
            "activation_bits": self.activation_bits,
            "first_last_bits": self.first_last_bits,
            "fake_quant": self.fake_quant,
        }
        for cls in techniques_lib.registered():  # the keyword form, every keyword
            config.update(self._fields_of(cls) if cls.fields else {})
        config["techniques"] = [
            techniques_lib.serialize(t) for t in self.techniques if not t.fields
        ]
        config["description"] = self.description
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Recipe) and self.get_config() == other.get_config()

    def __repr__(self):
        return (
            f"Recipe(name={self.name!r}, weight_bits={self.weight_bits}, "
            f"activation_bits={self.activation_bits})"
        )


PRESETS = {}


def register_preset(recipe, override=False):
    """Registers `recipe` under `recipe.name`; returns it.

    Args:
        recipe: a `Recipe` with a name.
        override: replace a preset of the same name; without it a taken
            name is an error.
    """
    if recipe.name in PRESETS and not override:
        raise ValueError(
            f"A recipe preset named {recipe.name!r} is already registered. Fix: give "
            "the recipe another name, or pass override=True to replace the preset."
        )
    PRESETS[recipe.name] = recipe
    return recipe


register_preset(
    Recipe(
        name="lsq",
        description="LSQ learned step sizes for weights and activations (Esser et al., ICLR 2020).",
    )
)
register_preset(
    Recipe(
        name="satnl",
        satnl_alpha=1.0,
        description="LSQ + SatNL weights alpha*tanh(W/alpha), alpha=1 "
        "(Park et al., ECCV 2022, sec. 3.3).",
    )
)
register_preset(
    Recipe(
        name="symreg",
        symreg=(0.1, 0.1),
        description="LSQ + SymReg, lambda1=lambda2=0.1 (Park et al., ECCV 2022, eq. 7-10).",
    )
)
register_preset(
    Recipe(
        name="kure",
        kure=1.0,
        description="LSQ + KURE, lambda=1, K_T=1.8 (Shkolnik et al., NeurIPS 2020).",
    )
)
register_preset(
    Recipe(
        name="sam",
        sam="sam",
        rho=0.05,
        description="LSQ + SAM, rho=0.05 (Foret et al., ICLR 2021).",
    )
)
register_preset(
    Recipe(
        name="asam",
        sam="asam",
        rho=0.5,
        eta=0.01,
        description="LSQ + ASAM, rho=0.5, eta=0.01 (Kwon et al., ICML 2021; CIFAR-10).",
    )
)
register_preset(
    Recipe(
        name="robust",
        satnl_alpha=1.0,
        symreg=(0.1, 0.1),
        sam="asam",
        rho=1.0,
        eta=0.01,
        description="SymReg + SatNL + ASAM (rho=1, eta=0.01): "
        "Park et al.'s 'All' (ECCV 2022, Table 2).",
    )
)
register_preset(
    Recipe(
        name="robust+kure",
        satnl_alpha=1.0,
        symreg=(0.1, 0.1),
        kure=1.0,
        sam="asam",
        rho=1.0,
        eta=0.01,
        description="Park et al.'s 'KURE + All' (ECCV 2022, Table 2): "
        "SymReg + SatNL + ASAM + KURE (lambda=1).",
    )
)
register_preset(
    Recipe(
        name="fpq",
        sfp_p=0.1,
        csd_weight=1.0,
        description="LSQ + SFP (p=0.1) + CSD (weight 1) from the float teacher "
        "(FPQ, arXiv 2503.11159).",
    )
)
register_preset(
    Recipe(
        name="minmax",
        weight_quantizer=quantizers_lib.MinMax(symmetric=True),
        activation_quantizer="ema_minmax",
        description="tfmot-style baseline: per-channel last-value min-max weights, "
        "EMA min-max activations.",
    )
)


def get_recipe(identifier):
    """Returns a `Recipe` from a preset name, a dict or an instance."""
    if isinstance(identifier, Recipe):
        return identifier
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            return keras.saving.deserialize_keras_object(
                identifier, module_objects={"Recipe": Recipe}
            )
        return Recipe.from_config(identifier)
    if isinstance(identifier, str):
        if identifier not in PRESETS:
            raise ValueError(
                f"Unknown recipe: '{identifier}'. Presets: {sorted(PRESETS)}. "
                "Pass one of these names, a dict or a kq.Recipe."
            )
        return PRESETS[identifier]
    raise ValueError(
        f"recipe must be a preset name, a dict or a kq.Recipe. Received: recipe={identifier!r}"
    )
