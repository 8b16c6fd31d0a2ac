"""The quantizer contract shared by every kqrobust quantizer.

Follows tfmot's `Quantizer` contract: `build(shape, name, layer)` creates the
quantizer's variables through the public `layer.add_weight` (so the layer owns
them, and SAM, probes and checkpoints see them) and returns them as a dict;
`__call__(x, weights, training)` quantizes.
"""

import math

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export


def check_bits(bits, name="bits"):
    """Validates a bit-width: an int in [2, 8]."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(
            f"{name} must be an int in [2, 8]. Received: {name}={bits!r}"
        )
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

    Subclasses store their `__init__` arguments as attributes and return
    exactly them from `get_config`.
    """

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

    def quantization_range(self, weights):
        """Returns `(min, max)` of the grid, for FakeQuant ops at export."""
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def replace(self, **changes):
        """Returns a copy with some constructor arguments changed."""
        return type(self).from_config({**self.get_config(), **changes})

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


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
