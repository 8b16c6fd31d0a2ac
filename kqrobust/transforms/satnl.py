"""SatNL: the saturating weight transform `alpha * tanh(W / alpha)`."""

from keras import ops

from kqrobust import validation
from kqrobust.api_export import kqrobust_export


def check_alpha(alpha):
    """`alpha` as a positive float, or a ValueError."""
    return validation.positive(
        alpha, "satnl_alpha", fix="pass a float > 0 (1.0 is the paper's plain tanh)."
    )


@kqrobust_export
class SatNL:
    """`f(W) = alpha * tanh(W / alpha)`, a layer's `weight_transform` hook.

    The layer computes with `f(W)` (the quantizer and SymReg see `f(W)`); `f`
    is odd, bounded by `alpha`, and its slope `1 - tanh^2(W/alpha)` falls as
    `|W|` grows. Export and `kq.ptq.float_view` fold `f(W)` into the stored
    kernel (`layer.transformed_kernel()`), so nothing of SatNL remains at
    inference.

    Args:
        alpha: the scale, a float > 0. 1.0 is the paper's plain tanh (close to
            the identity for typical weight magnitudes); smaller clamps harder.

    Example:
        >>> layer = kq.layers.QuantConv2D(16, 3, weight_transform=kq.transforms.SatNL(1.0))

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, sec. 3.2-3.3 and
        4.2 (saturating nonlinearity, `f = tanh`). See docs/methods.md#satnl.
    """

    def __init__(self, alpha=1.0):
        self.alpha = check_alpha(alpha)

    def __call__(self, kernel):
        return self.alpha * ops.tanh(kernel / self.alpha)

    def get_config(self):
        return {"alpha": self.alpha}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
