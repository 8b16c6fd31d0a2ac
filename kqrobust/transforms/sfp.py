"""SFP: FPQ's stochastic feature perturbation of a quantized layer's input.

Formulas: docs/methods.md#sfp.
"""

import keras
import tensorflow as tf
from keras import ops

from kqrobust import validation
from kqrobust.api_export import kqrobust_export


def check_probability(p):
    """`p` as a float in (0, 1], or a ValueError."""
    return validation.fraction(
        p, "sfp_p", fix="pass a float in (0, 1] (the paper sweeps 0.1-0.5, best 0.1)."
    )


def replica_id():
    """This replica's index in its `tf.distribute` sync group (0 outside one)."""
    context = tf.distribute.get_replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def sfp_noise(x, step, p, seed):
    """`x + m * delta`: `m ~ Bernoulli(p)` once per call, `delta ~ U[-s/2, s/2]`.

    Each call advances `seed` once; this replica's index is folded into the
    drawn key, so under a `tf.distribute` strategy every replica draws its
    own `m` and `delta` (as every worker of the papers' data-parallel
    training does), while the generator's state stays identical on all of
    them.

    Args:
        x: the layer input.
        step: the input quantizer's step `s` (a scalar; gradients stopped).
        p: the probability of perturbing at this call.
        seed: a `keras.random.SeedGenerator`.

    Returns:
        `x` with the noise added (same dtype); `x` itself when `m = 0`,
        and then no noise is drawn.
    """
    if not isinstance(seed, keras.random.SeedGenerator):
        raise ValueError(
            "sfp_noise draws from a generator whose state advances at each call. "
            f"Received: seed={seed!r}. Fix: pass a keras.random.SeedGenerator."
        )
    key = tf.random.experimental.stateless_fold_in(seed.next(), replica_id())
    apply_key, delta_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
    step = ops.cast(ops.stop_gradient(step), x.dtype)
    apply = tf.random.stateless_uniform((), seed=apply_key) < p

    def perturbed():
        delta = (
            tf.random.stateless_uniform(
                ops.shape(x), seed=delta_key, minval=-0.5, maxval=0.5, dtype=x.dtype
            )
            * step
        )
        return x + delta

    # The noise is drawn only at the calls that add it (a fraction p): one
    # uniform per element of every conv input is most of SFP's cost. The
    # values are those of `x + m * delta` with the same keys.
    return tf.cond(apply, perturbed, lambda: tf.identity(x))


@kqrobust_export
class SFP:
    """Stochastic feature perturbation, a layer's `input_perturbation` hook.

    In training only, with probability `p` (one independent draw per layer
    per step), adds `delta ~ U[-s/2, +s/2]` elementwise to the layer's input,
    `s` being the layer's LSQ input step with its gradient stopped. The noise
    has zero mean, so in expectation it adds `E[delta^2]/2 * Tr(H) =
    s^2/24 * Tr(H)` to the loss: an implicit Hessian penalty.

    Placement (the paper leaves it open): *after* the input fake-quant, i.e.
    the layer computes `conv(Q_in(x) + delta, Q_w(f(W)))`. The quantized
    input lies on the grid; the noise moves it within one bin, which is the
    perturbation quantization error itself can cause.

    The noise comes from `seed_generator`, a `keras.random.SeedGenerator`
    whose state variable the quantized layer tracks (`layer.variables`), so
    `.keras` save/load and `BackupAndRestore` restore it and a resumed run
    draws the noise it would have drawn. Under a `tf.distribute` strategy
    each replica draws different noise (see `sfp_noise`).

    Args:
        p: the probability per layer per step, a float in (0, 1] (paper: 0.1).
        seed: an int for the noise generator, or None.

    Example:
        >>> layer = kq.layers.QuantConv2D(
        ...     16, 3, input_quantizer="lsq", input_perturbation=kq.transforms.SFP(0.1))

    References:
        Pang & Cai, "Stabilizing Quantization-Aware Training by
        Implicit-Regularization on Hessian Matrix" (FPQ), arXiv 2503.11159,
        sec. "Stochastic Feature Perturbation",
        Proposition 1.
    """

    def __init__(self, p=0.1, seed=None):
        self.p = check_probability(p)
        self.seed = validation.optional_seed(seed)
        self.seed_generator = keras.random.SeedGenerator(
            seed, name=f"sfp_seed_generator_{keras.backend.get_uid('sfp_seed_generator')}"
        )

    @property
    def variables(self):
        """The generator's state, for the layer to track (and so to save)."""
        return [self.seed_generator.state]

    def __call__(self, x, input_step):
        if input_step is None:
            raise ValueError(
                "SFP needs the layer's LSQ input step (the noise width), but the "
                "layer has no LSQ input quantizer. Fix: give the layer an "
                "input_quantizer='lsq' (recipe activation_quantizer='lsq')."
            )
        return sfp_noise(x, input_step, self.p, self.seed_generator)

    def get_config(self):
        return {"p": self.p, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
