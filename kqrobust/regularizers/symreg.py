"""SymReg: symmetry regularization of each output channel's sorted weights."""

import keras
from keras import ops

from kqrobust import validation
from kqrobust.api_export import kqrobust_export


def _check_weight(value, name):
    return validation.non_negative(value, name, kind="float")


def _channel_axes(channel_axis):
    axes = (channel_axis,) if isinstance(channel_axis, int) else tuple(channel_axis)
    if not axes or any(isinstance(a, bool) or not isinstance(a, int) for a in axes):
        raise ValueError(
            "channel_axis must be an int or a tuple of ints (-1 for Conv2D/Dense "
            f"kernels, (-2, -1) for DepthwiseConv2D). Received: channel_axis={channel_axis!r}"
        )
    return axes


def sorted_channels(kernel, channel_axis=-1):
    """`(C, N)`: each output channel's weights, flattened and sorted ascending.

    One batched `sort` for the whole kernel.
    """
    kernel = ops.convert_to_tensor(kernel)
    rank = len(kernel.shape)
    axes = sorted(a % rank for a in _channel_axes(channel_axis))
    others = [a for a in range(rank) if a not in axes]
    channels = 1
    for a in axes:
        channels *= kernel.shape[a]
    per_channel = ops.reshape(ops.transpose(kernel, axes + others), (channels, -1))
    return ops.sort(ops.cast(per_channel, "float32"), axis=-1)


def symmetry_losses(kernel, channel_axis=-1):
    """`(L_sym1, L_sym2)` of one kernel (Park et al., ECCV 2022, eq. 8-9; docs/methods.md#symreg).

    For each output channel `c`, with its `N` weights sorted ascending
    (`w_(1) <= ... <= w_(N)`, 1-based):
      - `L_sym1 = 2/(C*N) * sum_c sum_{i=1..floor(N/2)} |w_(i) + w_(N+1-i)|`
      - `L_sym2 = 4/(C*N) * sum_c sum_{i=1..floor(N/4)}
        |w_(2i-1) + w_(2i) + w_(N-2i+2) + w_(N-2i+1)|`
    Leftover elements (the middle one of an odd `N`, the remainder of `N/4`)
    are not counted.

    Args:
        kernel: a Conv2D/Dense/DepthwiseConv2D kernel (any rank).
        channel_axis: the output-channel axis or axes.

    Returns:
        Two float32 scalars.
    """
    sorted_w = sorted_channels(kernel, channel_axis)
    channels, n = sorted_w.shape
    mirrored = ops.flip(sorted_w, axis=-1)
    half = n // 2
    sym1 = ops.sum(ops.abs(sorted_w[:, :half] + mirrored[:, :half]))
    quarter = n // 4
    low = ops.sum(ops.reshape(sorted_w[:, : 2 * quarter], (channels, quarter, 2)), axis=-1)
    high = ops.sum(ops.reshape(mirrored[:, : 2 * quarter], (channels, quarter, 2)), axis=-1)
    sym2 = ops.sum(ops.abs(low + high))
    return 2.0 / (channels * n) * sym1, 4.0 / (channels * n) * sym2


@kqrobust_export
class SymReg(keras.regularizers.Regularizer):
    """Symmetry regularization: `lambda1 * L_sym1 + lambda2 * L_sym2`.

    Pushes each output channel's weight distribution towards symmetry around
    zero, pair by pair of mirrored order statistics (`L_sym1`) and by the
    relaxed 2:2 groups (`L_sym2`), so a symmetric quantization grid fits it.
    Formulas in `symmetry_losses`. Use it as any Keras regularizer; inside a
    quantized layer (`kq.quantize_model`, `kq.robustify`) it sees `f(W)`, the
    weights after SatNL.

    Args:
        lambda1: weight of `L_sym1`, a float >= 0 (paper: 0.1).
        lambda2: weight of `L_sym2`, a float >= 0 (paper: 0.1).
        channel_axis: the output-channel axis of the kernel: -1 for Conv2D and
            Dense, (-2, -1) for DepthwiseConv2D.

    Example:
        >>> layer = keras.layers.Conv2D(
        ...     16, 3, kernel_regularizer=kq.regularizers.SymReg(0.1, 0.1))

    References:
        Park, Jang & Park, "Symmetry Regularization and Saturating
        Nonlinearity for Robust Quantization", ECCV 2022, sec. 4.1, eq. 7-10.
        See docs/methods.md#symreg.
    """

    def __init__(self, lambda1=0.1, lambda2=0.1, channel_axis=-1):
        self.lambda1 = _check_weight(lambda1, "lambda1")
        self.lambda2 = _check_weight(lambda2, "lambda2")
        axes = _channel_axes(channel_axis)
        self.channel_axis = axes[0] if len(axes) == 1 else axes

    def __call__(self, x):
        sym1, sym2 = symmetry_losses(x, self.channel_axis)
        return self.lambda1 * sym1 + self.lambda2 * sym2

    def get_config(self):
        return {"lambda1": self.lambda1, "lambda2": self.lambda2, "channel_axis": self.channel_axis}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("channel_axis"), list):
            config["channel_axis"] = tuple(config["channel_axis"])
        return cls(**config)
