"""Min-max quantizers: tfmot's LastValue (weights) and MovingAverage (activations)."""

from keras import ops

from kqrobust.ops.fake_quant import fake_quant_min_max
from kqrobust.ops.lsq import quant_levels
from kqrobust.quantizers.base import Quantizer
from kqrobust.quantizers.base import check_bits
from kqrobust.quantizers.base import normalize_axes
from kqrobust.quantizers.base import register_quantizer


@register_quantizer("minmax", ema_minmax={"ema_decay": 0.999})
class MinMax(Quantizer):
    """Quantizes to the observed `[min, max]` range with TF's FakeQuant nudging.

    The tfmot-style baseline. With `ema_decay=None` the range is the current
    tensor's (tfmot's `LastValueQuantizer`, used for weights, per channel);
    with `ema_decay` in (0, 1) it is an exponential moving average of batch
    ranges updated in training (tfmot's `MovingAverageQuantizer`, used for
    activations). `symmetric` (signed) puts zero on a code: the range is
    `[-Qn*s, Qp*s]` with the smallest step covering the data, `s =
    max(max(x)/Qp, -min(x)/Qn)`, on the grid of `kq.ops.quant_levels` (8 bits
    with `narrow_range`: `[-127*s, 127*s]`; below 8 bits the full grid, e.g.
    `[-8*s, 7*s]` at 4 bits). Unsigned, it is `[0, max|x|]`.

    Forward: `fake_quant_min_max(x, min, max, bits, narrow)`, where TF's
    narrow range (lowest code dropped) is on exactly when the signed grid is
    `Qn = Qp` (8 bits with `narrow_range`); gradient with respect to `x`: 1
    inside the nudged range, 0 outside.
    """

    def __init__(
        self,
        bits=8,
        signed=True,
        narrow_range=False,
        channel_axis=None,
        per_sample=False,
        ema_decay=None,
        symmetric=False,
    ):
        self.bits = check_bits(bits)
        self.signed = bool(signed)
        self.narrow_range = bool(narrow_range)
        self.channel_axis = channel_axis
        self._axes = normalize_axes(channel_axis)
        self.per_sample = bool(per_sample)
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(
                f"ema_decay must be None or in (0, 1). Received: ema_decay={ema_decay}"
            )
        self.ema_decay = ema_decay
        self.symmetric = bool(symmetric)

    def build(self, shape, name, layer):
        if self.ema_decay is None:
            return {}
        range_shape = tuple(shape[a] for a in self._axes)
        make = lambda suffix, init: layer.add_weight(  # noqa: E731
            name=f"{name}_{suffix}",
            shape=range_shape,
            initializer=init,
            trainable=False,
            aggregation="mean",
        )
        return {
            "min": make("min", "zeros"),
            "max": make("max", "zeros"),
            "initialized": layer.add_weight(
                name=f"{name}_initialized",
                shape=(),
                initializer="zeros",
                trainable=False,
                aggregation="mean",
            ),
        }

    def _observed_range(self, x):
        reduce_axes = tuple(range(len(x.shape) - len(self._axes)))
        x = ops.stop_gradient(x)
        lo = ops.minimum(ops.min(x, axis=reduce_axes), 0.0)
        hi = ops.maximum(ops.max(x, axis=reduce_axes), 0.0)
        if self.symmetric and self.signed:
            qn, qp = self.levels
            hi = ops.maximum(hi, -lo * (qp / qn))
            lo = -hi * (qn / qp)
        elif self.symmetric:
            hi = ops.maximum(-lo, hi)
        if not self.signed:
            lo = ops.zeros_like(lo)
        # A range of zero width cannot be quantized; keep it open.
        hi = ops.maximum(hi, lo + 1e-6)
        return lo, hi

    def __call__(self, x, weights, training=False):
        if self.ema_decay is None:
            lo, hi = self._observed_range(x)
        else:
            lo, hi = self._moving_range(x, weights, training)
        return fake_quant_min_max(x, lo, hi, self.bits, self.fake_quant_narrow_range)

    @property
    def levels(self):
        """`(Qn, Qp)` of the signed or unsigned grid (`kq.ops.quant_levels`)."""
        return quant_levels(self.bits, self.signed, self.narrow_range)

    @property
    def fake_quant_narrow_range(self):
        """TF FakeQuant's `narrow_range`: on for the signed grid `[-Qp, Qp]`."""
        qn, qp = self.levels
        return self.signed and qn == qp

    def _moving_range(self, x, weights, training):
        if training:
            lo, hi = self._observed_range(x)
            done = ops.cast(weights["initialized"], "float32") > 0.5
            d = self.ema_decay
            weights["min"].assign(ops.where(done, d * weights["min"] + (1 - d) * lo, lo))
            weights["max"].assign(ops.where(done, d * weights["max"] + (1 - d) * hi, hi))
            weights["initialized"].assign(ops.ones_like(weights["initialized"]))
        return weights["min"], ops.maximum(weights["max"], weights["min"] + 1e-6)

    def initialize(self, x, weights):
        if self.ema_decay is None:
            return
        lo, hi = self._observed_range(x)
        weights["min"].assign(lo)
        weights["max"].assign(hi)
        weights["initialized"].assign(ops.ones_like(weights["initialized"]))

    def is_initialized(self, weights):
        if self.ema_decay is None:
            return True
        return bool(ops.convert_to_numpy(weights["initialized"]) > 0.5)

    def quantization_range(self, weights, x=None):
        if self.ema_decay is None:
            return None if x is None else self._observed_range(x)
        return weights["min"], weights["max"]

    def get_config(self):
        return {
            "bits": self.bits,
            "signed": self.signed,
            "narrow_range": self.narrow_range,
            "channel_axis": self.channel_axis,
            "per_sample": self.per_sample,
            "ema_decay": self.ema_decay,
            "symmetric": self.symmetric,
        }
