"""The quantizer contract shared by every kqrobust quantizer, and its registry.

Follows tfmot's `Quantizer` contract: `build(shape, name, layer)` creates the
quantizer's variables through the public `layer.add_weight` (so the layer owns
them, and SAM, probes and checkpoints see them) and returns them as a dict;
`__call__(x, weights, training)` quantizes. `Quantizer` states the rest of
what layers, PTQ, export and evaluation rely on; `register_quantizer` makes a
class known by name, and `tests/quantizers/test_contract.py` runs every
registered quantizer through the whole contract.
"""

import functools
import math

import keras
from keras import ops

from kqrobust import validation
from kqrobust.api_export import kqrobust_export


def check_bits(bits, name="bits"):
    """Validates a bit-width: an int in [2, 8]."""
    validation.int_in_range(bits, name, 2, 8)
    return bits


def normalize_axes(channel_axis):
    """Returns channel axes as a tuple of negative ints, or `()` per tensor."""
    if channel_axis is None:
        return ()
    axes = (channel_axis,) if isinstance(channel_axis, int) else tuple(channel_axis)
    if any(a >= 0 for a in axes):
        raise ValueError(
            "channel_axis must count from the end (negative ints), so steps "
            f"broadcast against the tensor. Received: channel_axis={channel_axis}"
        )
    axes = tuple(sorted(axes))
    if axes != tuple(range(-len(axes), 0)):
        raise ValueError(
            "channel_axis must name the trailing axes, e.g. -1 or (-2, -1). "
            f"Received: channel_axis={channel_axis}"
        )
    return axes


class Quantizer:
    """Base class: a serializable description of how one tensor is quantized.

    Every quantizer provides:

    - the constructor arguments `bits`, `signed`, `narrow_range`,
      `channel_axis` and `per_sample` (`kq.quantize_model` sets them per
      layer with `replace`), as attributes, and `levels` (`(Qn, Qp)` of its
      integer grid, `kq.ops.quant_levels`);
    - `build(shape, name, layer)`: creates its variables with
      `layer.add_weight` and returns them as a dict;
    - `__call__(x, weights, training=False)`: `x` on the grid, same shape;
      with `training=True` it sets data-dependent state not yet set (the
      calibration pass of `kq.quantize_model`, the first training batch);
      inference (`training=False`) never writes a variable;
    - `get_config()`: exactly the `__init__` arguments; `from_config` is the
      inverse;
    - `quantization_range(weights, x=None)`: `(min, max)` of the grid for
      export, or None when the range comes from the tensor and `x` is None;
    - `initialize(x, weights)` / `is_initialized(weights)` for data-dependent
      state.

    A quantizer whose grid is a step variable (`has_step = True`) also
    provides the accessors PTQ, export and evaluation use: `step`,
    `effective_step`, `offset`, `set_step` and `quantize_with_step`. The
    defaults here describe a quantizer without a step.
    """

    #: True when the grid is set by a step variable that PTQ calibrates,
    #: evaluation rescales and export reads.
    has_step = False

    def build(self, shape, name, layer):
        """Creates the variables on `layer` and returns them as a dict."""
        raise NotImplementedError

    def __call__(self, x, weights, training=False):
        raise NotImplementedError

    def initialize(self, x, weights):
        """Sets data-dependent state (e.g. a step) from `x`; a no-op by default."""

    def is_initialized(self, weights):
        """False while the quantizer still waits for data to set its state."""
        return True

    def quantization_range(self, weights, x=None):
        """Returns `(min, max)` of the grid, for FakeQuant ops at export.

        Args:
            weights: the variables `build` returned.
            x: the tensor, for quantizers whose range is the tensor's own
                (a last-value min-max); others ignore it.

        Returns:
            A pair of tensors (one value per step, or scalars), or None when
            the range comes from the tensor and `x` is None.
        """
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def _no_step(self, accessor):
        return TypeError(
            f"{type(self).__name__}.{accessor} needs a quantizer with a step "
            f"(has_step=True). Received: {self!r}. Fix: check `quantizer.has_step` "
            "first, or use a step-based quantizer such as LSQ or FixedRange."
        )

    def step(self, weights):
        """The step variable (one value per channel, or a scalar)."""
        raise self._no_step("step")

    def effective_step(self, weights):
        """The step the forward pass uses (the variable, kept positive)."""
        raise self._no_step("effective_step")

    def offset(self, weights):
        """The offset variable of the grid, or None when it has none."""
        return None

    def set_step(self, weights, value):
        """Writes the step (reshaped to the variable) and marks the quantizer
        initialised, so no lazy initialisation overwrites it."""
        raise self._no_step("set_step")

    def quantize_with_step(self, x, weights, step):
        """`x` on this quantizer's grid with the candidate `step` instead of
        its variable (PTQ reconstruction and bias correction); differentiable
        with respect to `x` and `step`."""
        raise self._no_step("quantize_with_step")

    def replace(self, **changes):
        """Returns a copy with some constructor arguments changed."""
        return type(self).from_config({**self.get_config(), **changes})

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


#: The registered quantizer classes by class name, and the names `get` takes.
REGISTERED = {}
ALIASES = {}


def register_quantizer(*names, override=False, **named_configs):
    """Class decorator: registers a `Quantizer` subclass.

    The class becomes loadable from `.keras` files (`kqrobust>ClassName`),
    `kq.quantizers.get` / `deserialize` know it, and the contract test runs
    it. `names` are names for the class with its defaults; each keyword is a
    name for the class with those constructor arguments.

    Example: `@register_quantizer("my_lsq", my_lsq_plus={"learn_offset": True})`
    above `class MyLSQ(LSQ)` registers "my_lsq" and the preset "my_lsq_plus",
    as `kqrobust/quantizers/lsq.py` registers "lsq" and "lsq_plus";
    docs/extending.md runs a registration.

    Args:
        *names: lower-case names for `get`.
        override: replace a class or name already registered.
        **named_configs: name -> constructor arguments.
    """

    def decorate(cls):
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(
                "register_quantizer decorates a kq.quantizers.Quantizer subclass. "
                f"Received: {cls!r}"
            )
        new = {name: functools.partial(cls) for name in names}
        new.update(
            {name: functools.partial(cls, **config) for name, config in named_configs.items()}
        )
        taken = [n for n in new if n in ALIASES]
        if cls.__name__ in REGISTERED and REGISTERED[cls.__name__] is not cls:
            taken.insert(0, cls.__name__)
        if taken and not override:
            raise ValueError(
                f"Quantizer name(s) {taken} are already registered. Fix: choose "
                "other names, or pass override=True to replace them."
            )
        REGISTERED[cls.__name__] = kqrobust_export(cls)
        ALIASES.update(new)
        return cls

    return decorate


@kqrobust_export
class MinValue(keras.constraints.Constraint):
    """Keeps a variable at or above `min_value` after every optimizer update."""

    def __init__(self, min_value=1e-8):
        self.min_value = min_value

    def __call__(self, w):
        return ops.maximum(w, self.min_value)

    def get_config(self):
        return {"min_value": self.min_value}


def features_per_step(x, axes, per_sample):
    """`N` of LSQ's gradient scale `g = 1/sqrt(N*Qp)`: elements one step covers.

    Per sample (activations): the features of one sample. Per channel
    (weights): the elements of one channel. A static int when the shape is
    known, else a tensor computed at run time.
    """
    shape = tuple(x.shape)
    dims = shape[1:] if per_sample else shape[: len(shape) - len(axes)]
    if all(d is not None for d in dims):
        return max(1, math.prod(dims))
    dyn = ops.shape(x)
    dims = dyn[1:] if per_sample else dyn[: len(dyn) - len(axes)]
    return ops.cast(ops.prod(ops.convert_to_tensor(dims)), "float32")
