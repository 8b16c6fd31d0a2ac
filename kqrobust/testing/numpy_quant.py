"""NumPy reference of LSQ's forward pass, for the layer tests."""

import numpy as np


def np_quant(x, step, bits, signed, narrow):
    """`round(clip(x / step, -Qn, Qp)) * step` on LSQ's grid.

    Signed: `[-2^(b-1), 2^(b-1) - 1]`, narrow range only drops -128 at 8 bits;
    unsigned: `[0, 2^b - 1]`.

    References:
        Esser et al., "Learned Step Size Quantization", ICLR 2020, eq. 1.
    """
    qp = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    qn = (qp if narrow and bits == 8 else qp + 1) if signed else 0
    return np.round(np.clip(x / step, -qn, qp)) * step
