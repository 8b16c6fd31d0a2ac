"""NumPy references of the quantizers, for tests of the quantized layers."""

import numpy as np


def lsq_grid(x, step, bits, signed=True, narrow=False):
    """`round(clip(x / s, -Qn, Qp)) * s` on LSQ's grid (`kq.ops.quant_levels`):
    signed `[-2^(b-1), 2^(b-1) - 1]` (narrow range drops -128 at 8 bits only),
    unsigned `[0, 2^b - 1]`.

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. 1.
    """
    qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    qn = (qp if narrow and bits == 8 else qp + 1) if signed else 0
    return np.round(np.clip(np.asarray(x) / step, -qn, qp)) * step
