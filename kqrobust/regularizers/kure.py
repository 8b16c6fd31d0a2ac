"""KURE: kurtosis regularization of a layer's whole kernel."""

import keras
from keras import ops

from kqrobust import validation
from kqrobust.api_export import kqrobust_export


def kurtosis(kernel, epsilon=1e-12):
    """`mean(((W - mu) / sigma)^4)` over the whole kernel (float32 scalar).

    `sigma` is the population standard deviation; `epsilon` is added to
    `sigma^4` so a constant kernel gives a finite value.
    """
    w = ops.reshape(ops.cast(kernel, "float32"), (-1,))
    centered = w - ops.mean(w)
    variance = ops.mean(ops.square(centered))
    return ops.mean(ops.square(ops.square(centered))) / (ops.square(variance) + epsilon)


@kqrobust_export
class KURE(keras.regularizers.Regularizer):
    """Kurtosis regularization: `weight * (Kurt(W) - target)^2`.

    `Kurt(W) = mean(((W - mu)/sigma)^4)` over the whole kernel. Driving it to
    1.8, the kurtosis of a uniform distribution, makes the weights
    uniform-like and so robust to the quantization step (docs/methods.md#kure).
    The paper's loss is `lambda * mean_over_layers (Kurt(W_l) - K_T)^2`: as a
    per-layer Keras regularizer that is `KURE(weight=lambda / L)` on each of
    the `L` layers, which is what the recipes (`kure`, `robust+kure`) set.

    Args:
        target: the target kurtosis `K_T` (1.8: uniform).
        weight: the multiplier, a float >= 0 (paper's `lambda = 1.0`).

    Example:
        >>> layer = keras.layers.Dense(
        ...     10, kernel_regularizer=kq.regularizers.KURE(weight=0.25))

    References:
        Shkolnik et al., "Robust Quantization: One Model to Rule Them All",
        NeurIPS 2020, eq. 4-5.
    """

    def __init__(self, target=1.8, weight=1.0):
        self.target = validation.non_negative(target, "target", kind="float")
        self.weight = validation.non_negative(weight, "weight", kind="float")

    def __call__(self, x):
        return self.weight * ops.square(kurtosis(x) - self.target)

    def get_config(self):
        return {"target": self.target, "weight": self.weight}
