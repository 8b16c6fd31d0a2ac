"""Straight-through rounding and gradient scaling."""

from keras import ops


def round_ste(x):
    """Rounds half to even in the forward pass; identity gradient.

    Forward: `round(x)`. Backward: `d round_ste(x) / dx = 1` (the
    straight-through estimator, Bengio et al. 2013), written as
    `x + stop_gradient(round(x) - x)` so that second derivatives stay those of
    the identity (DESIGN.md: TF's FakeQuant ops break them).
    """
    return x + ops.stop_gradient(ops.round(x) - x)


def scale_gradient(x, scale):
    """Returns `x` in the forward pass and `scale * dL/dx` in the backward pass.

    This is LSQ's gradient-scale trick, `x*g + stop_gradient(x - x*g)`
    (Esser et al. 2020, sec. 2.2).
    """
    scaled = x * scale
    return scaled + ops.stop_gradient(x - scaled)
