"""`Technique`: a training technique as a registered, serializable component.

A recipe (`kq.Recipe`) is quantizers and bit-widths plus a list of
techniques. A technique plugs into one or both of two places:

- **the layer hooks** (`layer_hooks`): what each quantized layer gets as its
  `weight_transform` (SatNL), `input_perturbation` (SFP) or `kernel_losses`
  (SymReg, KURE); see `kq.layers.QuantizeMixin`;
- **the train step** of `kq.training.QuantModel`: a loss term computed from
  layer outputs and a per-step input (`feature_layers`, `prepare`, `loss`:
  CSD), or the gradient computation itself (`gradients`: SAM/ASAM).

A new technique is a subclass in its own file, registered with
`@register_technique`. Its constructor arguments are its config; it may also
declare `fields`, keywords that `kq.Recipe(...)` accepts for it
(`kq.Recipe(satnl_alpha=1.0)` is `kq.Recipe(techniques=[SatNLTechnique(1.0)])`).
"""

import re

import keras

from kqrobust import validation
from kqrobust.api_export import PACKAGE
from kqrobust.layers.base import HOOK_KEYS

# The layer hooks a technique may set (the quantizers are the recipe's).
TECHNIQUE_HOOKS = tuple(k for k in HOOK_KEYS if k not in ("kernel_quantizer", "input_quantizer"))
# Layer-selection tokens; any other string is a layer-name regex (re.fullmatch).
EXCLUDE_TOKENS = ("depthwise", "first_conv", "last_dense")
CONV_KINDS = ("conv", "depthwise")
# `kq.Recipe`'s own arguments: no technique field may take these names.
RECIPE_ARGUMENTS = (
    "name",
    "weight_quantizer",
    "activation_quantizer",
    "weight_bits",
    "activation_bits",
    "first_last_bits",
    "fake_quant",
    "techniques",
    "description",
)

_REGISTRY = {}  # name -> Technique subclass, in registration order
_FIELDS = {}  # Recipe keyword -> the Technique subclass that owns it


def check_nonnegative(value, name, allow_none=True):
    """`value` as a float >= 0 (or None when allowed), else a ValueError."""
    if value is None and allow_none:
        return None
    return validation.non_negative(value, name, kind="float")


def check_exclude(exclude, name):
    """`exclude` as a tuple of layer-selection strings, else a ValueError."""
    if (
        isinstance(exclude, str)
        or not isinstance(exclude, (tuple, list))
        or not all(isinstance(e, str) for e in exclude)
    ):
        raise ValueError(
            f"{name} must be a tuple of strings: tokens {list(EXCLUDE_TOKENS)} or "
            f"layer-name regexes. Received: {name}={exclude!r}"
        )
    return tuple(exclude)


class QuantizedLayers:
    """The layers a recipe hooks, in graph order, and the selections techniques use.

    Args:
        layers: `[(name, kind, output_axes)]`: the quantized layers' names,
            their kind ("conv", "depthwise", "dense"; `kq.layers.registry`)
            and their kernel's output-channel axes.
    """

    def __init__(self, layers):
        self.entries = [tuple(entry) for entry in layers]
        self.names = [name for name, _, _ in self.entries]
        self.convs = [name for name, kind, _ in self.entries if kind in CONV_KINDS]
        self.first_conv = self.convs[0] if self.convs else None
        last = self.entries[-1] if self.entries else None
        self.last_dense = last[0] if last is not None and last[1] == "dense" else None

    def excluded(self, exclude, name, kind):
        """Whether layer `name` matches a token or regex of `exclude`."""
        for item in exclude:
            if item == "depthwise" and kind == "depthwise":
                return True
            if item == "first_conv" and name == self.first_conv:
                return True
            if item == "last_dense" and name == self.last_dense:
                return True
            if item not in EXCLUDE_TOKENS and re.fullmatch(item, name):
                return True
        return False

    def without(self, exclude):
        """The entries `(name, kind, output_axes)` that `exclude` leaves."""
        return [entry for entry in self.entries if not self.excluded(exclude, *entry[:2])]


class Technique:
    """Base class of training techniques (SatNL, SymReg, KURE, SFP, SAM/ASAM, CSD).

    Subclasses set the class attributes below, store their constructor
    arguments as attributes and return them from `get_config`, and override
    the methods of the places they plug into. A recipe holds one instance
    per technique; the instance is shared by every model built from the
    recipe, so per-model state goes in `model.technique_cache(name)`.

    Class attributes:
        name: the registry name (`kq.techniques.get(name)`), unique.
        order: where the technique goes in a recipe built from keywords
            (lower first; ties by registration): the order of the layers'
            `kernel_losses` and of the loss terms. Built in: SatNL 10,
            SymReg 20, KURE 30, SAM 40, SFP 50, CSD 60; default 100.
        fields: `{Recipe keyword: default}` of the technique's keyword form,
            or `{}` (then recipes list it in `techniques=[...]`). The first
            keyword is the switch: at its default the technique is off.
        loss_name: the metric name of the train-step loss term (`loss`), or
            None.
        needs_fake_quant: why the technique needs quantized layers (a
            sentence), or None: `kq.robustify` refuses it otherwise.
        paper_weight_decay: the SGD weight decay its paper trains with, or
            None (`kqrobust.pipeline.optim.default_weight_decay`).
    """

    name = None
    order = 100
    fields = {}
    loss_name = None
    needs_fake_quant = None
    paper_weight_decay = None

    # --- The keyword form (`kq.Recipe(satnl_alpha=...)`) ---------------------

    @classmethod
    def from_fields(cls, **fields):
        """The technique described by its `fields`, or None when switched off.

        Every given field is validated (so a bad value raises even when the
        technique is off); the others take their defaults.
        """
        raise NotImplementedError(f"{cls.__name__} has no keyword form (fields={{}}).")

    def to_fields(self):
        """This technique's `fields`, the inverse of `from_fields`."""
        raise NotImplementedError(f"{type(self).__name__} has no keyword form (fields={{}}).")

    def describe(self):
        """`"sfp_p=0.1"`: the technique as a recipe states it, for messages."""
        if self.fields:
            return ", ".join(f"{k}={v!r}" for k, v in self.to_fields().items())
        return f"techniques=[{type(self).__name__}(...)]"

    def how_to_remove(self):
        """The change that drops this technique from a recipe, for messages."""
        if self.fields:
            switch = next(iter(self.fields))
            return f"recipe.replace({switch}={self.fields[switch]!r})"
        return f"a recipe without {type(self).__name__} in its techniques"

    # --- Layer hooks ---------------------------------------------------------

    def layer_hooks(self, layers):
        """`{layer name: {hook: value}}` for the layers this technique hooks.

        Args:
            layers: a `QuantizedLayers`.

        Returns:
            A dict; hooks are `TECHNIQUE_HOOKS`. `kernel_losses` values are
            lists (they add up over techniques); a layer gets at most one
            `weight_transform` and one `input_perturbation`.
        """
        return {}

    def check_layer(self, recipe, name, hooks, input_quantizer):
        """Raises a ValueError when layer `name`'s plan cannot host this technique.

        Args:
            recipe: the `Recipe`.
            name: the layer name.
            hooks: the layer's merged hooks (`layer_hooks` of every technique).
            input_quantizer: the layer's planned input quantizer, or None
                (always None when `recipe.fake_quant` is False).
        """

    # --- The train step (`kq.training.QuantModel.train_step`) ----------------

    def feature_layers(self, model):
        """Names of the layers of `model` whose outputs `loss` reads (default none)."""
        return []

    def prepare(self, model, x, y, sample_weight):
        """Per-step input computed once before the forward passes (default None)."""
        return None

    def loss(self, model, step):
        """A scalar added to the training loss, or None (default).

        Args:
            model: the `QuantModel`.
            step: a `TrainingStep`: `x`, `y`, `sample_weight`, `y_pred`,
                `features` (the outputs of `feature_layers`, same order) and
                `prepared` (what `prepare` returned).
        """
        return None

    def gradients(self, model, tape, scaled_loss, variables, objective):
        """The gradients the optimizer applies, or None to let the step take them.

        At most one technique of a recipe computes them (SAM/ASAM).

        Args:
            model: the `QuantModel`.
            tape: the `tf.GradientTape` of the first forward pass.
            scaled_loss: its loss, scaled by the optimizer (`scale_loss`).
            variables: `model.trainable_variables`.
            objective: `() -> loss`, one more training forward at the current
                weights (same batch, same `prepare` outputs).
        """
        return None

    @property
    def adds_loss(self):
        """Whether the technique adds a train-step loss term (overrides `loss`)."""
        return type(self).loss is not Technique.loss

    @property
    def computes_gradients(self):
        """Whether the technique computes the step's gradients (overrides `gradients`)."""
        return type(self).gradients is not Technique.gradients

    # --- Serialization -------------------------------------------------------

    def get_config(self):
        raise NotImplementedError(f"{type(self).__name__} must implement get_config().")

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(type(self))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class TrainingStep:
    """What `Technique.loss` sees of one training forward pass."""

    def __init__(self, x, y, sample_weight, y_pred, features, prepared):
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.y_pred = y_pred
        self.features = features
        self.prepared = prepared


def register_technique(cls=None, *, package=PACKAGE, override=False):
    """Registers a `Technique` subclass by its `name` (and for `.keras` loading).

    Use as a decorator, `@register_technique` or
    `@register_technique(package="my_project")`. The class is also registered
    with `keras.saving.register_keras_serializable(package=package)`, so a
    recipe holding it saves and loads with the model.

    Args:
        cls: the class.
        package: the Keras serialization package.
        override: replace a technique already registered under this name.

    Raises:
        ValueError: the name is taken (and `override` is False), or a field
            is another technique's or a `Recipe` argument.
    """
    if cls is None:
        return lambda c: register_technique(c, package=package, override=override)
    if not (isinstance(cls, type) and issubclass(cls, Technique)):
        raise ValueError(
            f"register_technique takes a subclass of kq.techniques.Technique. Received: {cls!r}"
        )
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError(
            f"{cls.__name__}.name must be a non-empty string (its registry name). "
            f"Received: name={cls.name!r}"
        )
    previous = _REGISTRY.get(cls.name)
    if previous is not None and not override:
        raise ValueError(
            f"A technique named '{cls.name}' is registered already ({previous.__name__}). "
            "Fix: choose another name, or pass override=True to replace it."
        )
    for field in cls.fields:
        owner = _FIELDS.get(field)
        if field in RECIPE_ARGUMENTS or (owner is not None and owner.name != cls.name):
            raise ValueError(
                f"{cls.__name__} declares the Recipe keyword '{field}', which "
                f"{'Recipe itself takes' if owner is None else owner.__name__ + ' owns'}. "
                "Fix: give the field another name."
            )
    if previous is not None:
        for field in previous.fields:
            _FIELDS.pop(field, None)
    keras.saving.register_keras_serializable(package=package)(cls)
    _REGISTRY[cls.name] = cls
    for field in cls.fields:
        _FIELDS[field] = cls
    return cls


def registered():
    """The registered technique classes, by `order` (ties: registration order)."""
    return sorted(_REGISTRY.values(), key=lambda cls: cls.order)


def registered_as(name):
    """The technique class registered as `name`, or None."""
    return _REGISTRY.get(name)


def field_owner(field):
    """The technique class that owns Recipe keyword `field`, or None."""
    return _FIELDS.get(field)


def get(identifier):
    """A `Technique` from a registered name (default arguments), a dict or an instance."""
    if isinstance(identifier, Technique):
        return identifier
    if isinstance(identifier, str):
        if identifier not in _REGISTRY:
            raise ValueError(
                f"Unknown technique: '{identifier}'. Registered: {sorted(_REGISTRY)}. "
                "Fix: pass one of these names, a kq.techniques.Technique or its dict."
            )
        return _REGISTRY[identifier]()
    if isinstance(identifier, dict):
        technique = keras.saving.deserialize_keras_object(identifier)
        if isinstance(technique, Technique):
            return technique
    raise ValueError(
        "A technique must be a registered name, a kq.techniques.Technique or its "
        f"serialized dict. Received: {identifier!r}"
    )


def serialize(technique):
    """The dict `get` turns back into `technique`."""
    return keras.saving.serialize_keras_object(technique)
