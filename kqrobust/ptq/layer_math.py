"""One quantized layer's pre-activation output, with explicit parameters.

Reconstruction and bias correction evaluate a layer with candidate weights
and steps that are not (yet) its variables. `preactivation` computes
`op(Q_in(x), Q_w(W)) + b` from tensors passed in, reusing the layer's own
`linear_op` and quantizer settings; the activation is left out (AdaQuant
reconstructs the convolution output, before BatchNorm and ReLU).
"""

import numpy as np
from keras import ops

from kqrobust.ptq.steps import has_step
from kqrobust.ptq.steps import quantizer_of
from kqrobust.ptq.steps import step_variable


def _quantize(layer, tensor, x, step):
    """`x` on the layer's grid for `tensor`, with `step` (None: unchanged)."""
    quantizer, weights = quantizer_of(layer, tensor)
    if quantizer is None:
        return x
    if step is None:
        return quantizer(x, weights, training=False)
    return quantizer.quantize_with_step(x, weights, step)


def _with_bias(layer, outputs, bias):
    if bias is None:
        return outputs
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        bias = ops.reshape(bias, (1, -1) + (1,) * (len(outputs.shape) - 2))
    return outputs + bias


def preactivation(
    layer,
    x,
    kernel,
    bias,
    kernel_step=None,
    input_step=None,
    quantize=True,
    x_float=None,
    keep_mask=None,
):
    """`op(Q_in(x), Q_w(kernel)) + bias` of a quantized layer.

    Args:
        layer: a `QuantConv2D`, `QuantDepthwiseConv2D` or `QuantDense`.
        x: the layer input.
        kernel, bias: the weights to use (`bias` None: no bias).
        kernel_step, input_step: steps to use for quantizers with a step;
            None uses the quantizer with its own variables.
        quantize: False computes the float output `op(x, kernel) + bias`.
        x_float: the float input, for QDrop mixing.
        keep_mask: boolean tensor like `x`: where True the quantized input is
            kept, elsewhere `x_float` is used (QDrop).

    Returns:
        The pre-activation output tensor.
    """
    if quantize:
        x = _quantize(layer, "input", x, input_step)
        if keep_mask is not None:
            x = ops.where(keep_mask, x, x_float)
        kernel = _quantize(layer, "kernel", kernel, kernel_step)
    return _with_bias(layer, layer.linear_op(x, kernel), bias)


def current_steps(layer):
    """`(kernel_step, input_step)` variables of `layer` (None where absent)."""
    return tuple(
        step_variable(layer, t) if has_step(layer, t) else None for t in ("kernel", "input")
    )


def batched_mean(fn, arrays, batch_size, axis_keep=None):
    """Mean of `fn(*batch)` over all `arrays` in batches.

    Args:
        fn: maps batches (NumPy arrays) to a tensor.
        arrays: arrays sharing their first dimension.
        batch_size: batch size.
        axis_keep: None for the scalar mean of all elements, or an axis to
            keep (a per-channel mean over all other axes).

    Returns:
        A NumPy scalar or vector.
    """
    total, count = 0.0, 0
    n = len(arrays[0])
    for start in range(0, n, batch_size):
        values = np.asarray(fn(*(a[start : start + batch_size] for a in arrays)), "float64")
        if axis_keep is None:
            total = total + values.sum()
            count += values.size
        else:
            moved = np.moveaxis(values, axis_keep, -1)
            total = total + moved.reshape(-1, moved.shape[-1]).sum(axis=0)
            count += moved.size // moved.shape[-1]
    return total / count
