"""SFP: FPQ's stochastic feature perturbation of a quantized layer's input."""

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export


def check_probability(p):
    """`p` as a float in (0, 1], or a ValueError."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 < p <= 1:
        raise ValueError(
            "sfp_p must be a float in (0, 1] (the paper sweeps 0.1-0.5, best 0.1). "
            f"Received: sfp_p={p!r}")
    return float(p)


def sfp_noise(x, step, p, seed):
    """`x + m * delta`: `m ~ Bernoulli(p)` once per call, `delta ~ U[-s/2, s/2]`.

    Args:
        x: the layer input.
        step: the input quantizer's step `s` (a scalar; gradients stopped).
        p: the probability of perturbing at this call.
        seed: a `keras.random.SeedGenerator`.

    Returns:
        `x` with the noise added (same dtype).
    """
    step = ops.cast(ops.stop_gradient(step), x.dtype)
    apply = ops.cast(keras.random.uniform((), seed=seed) < p, x.dtype)
    delta = keras.random.uniform(ops.shape(x), minval=-0.5, maxval=0.5,
                                 dtype=x.dtype, seed=seed) * step
    return x + apply * delta


@kqrobust_export
class SFP:
    """Stochastic feature perturbation, a layer's `input_perturbation` hook.

    In training only, with probability `p` (one independent draw per layer
    per step), adds `delta ~ U[-s/2, +s/2]` elementwise to the layer's input,
    `s` being the layer's LSQ input step with its gradient stopped. The noise
    has zero mean, so in expectation it adds `E[delta^2]/2 * Tr(H) =
    s^2/24 * Tr(H)` to the loss: an implicit Hessian penalty.

    Placement (METHODS.md leaves it open): *after* the input fake-quant, i.e.
    the layer computes `conv(Q_in(x) + delta, Q_w(f(W)))`. The quantized
    input lies on the grid; the noise moves it within one bin, which is the
    perturbation quantization error itself can cause.

    Args:
        p: the probability per layer per step, a float in (0, 1] (paper: 0.1).
        seed: an int for the noise generator, or None.

    Example:
        >>> layer = kq.layers.QuantConv2D(
        ...     16, 3, input_quantizer="lsq", input_perturbation=kq.transforms.SFP(0.1))

    References:
        FPQ (arXiv 2503.11159), sec. "Stochastic Feature Perturbation",
        Proposition 1.
    """

    def __init__(self, p=0.1, seed=None):
        self.p = check_probability(p)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None. Received: seed={seed!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def __call__(self, x, input_step):
        if input_step is None:
            raise ValueError(
                "SFP needs the layer's LSQ input step (the noise width), but the "
                "layer has no LSQ input quantizer. Fix: give the layer an "
                "input_quantizer='lsq' (recipe activation_quantizer='lsq').")
        return sfp_noise(x, input_step, self.p, self.seed_generator)

    def get_config(self):
        return {"p": self.p, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
