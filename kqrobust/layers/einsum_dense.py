"""EinsumDense: the quantized and export classes and the registry entry.

An `EinsumDense` equation `input,kernel->output` is "matmul-like" when the
kernel is `contracted + out` letters, the input ends with the contracted
letters (in the kernel's order) and the output is the input's other letters
followed by the kernel's `out` letters: `abc,cde->abde` and `abcd,cde->abe`
(MultiHeadAttention's projections), `...b,bc->...c` (Dense on N-D inputs).
The layer then computes `reshape(reshape(x, (-1, K)) @ reshape(W, (K, N)))`,
which the TFLite converter turns into one int8 FULLY_CONNECTED with the
kernel as its `(N, K)` weights; the int8 grid is written into it after
conversion (`kq.export.tflite_weights`), one scale per output channel.
Other equations compute with `einsum` and keep the converter's own weights.

The kernel's output-channel axes (one weight step each) are its trailing
`out` axes; an equation whose output letters are not the kernel's trailing
axes, or not the output's trailing axes in the same order, raises a
ValueError.

References:
    TensorFlow Lite 8-bit quantization specification (per-axis int8
    FULLY_CONNECTED weights on dimension 0, int32 bias of scale
    `input_scale * weight_scale`).
"""

import math

import keras
from keras import ops

from kqrobust.api_export import kqrobust_export
from kqrobust.layers import registry
from kqrobust.layers.base import QuantizeMixin
from kqrobust.layers.export_base import ExportMixin

FULLY_CONNECTED = 9  # tflite::BuiltinOperator


@kqrobust_export
class QuantEinsumDense(QuantizeMixin, keras.layers.EinsumDense):
    """`keras.layers.EinsumDense` with quantized input and per-output-channel weights.

    The kernel gets one step per output channel: per entry of its trailing
    axes whose letters appear in the output (`cde` in `abc,cde->abde`: one
    step per `(d, e)`). Arguments: those of `QuantizeMixin` and of
    `keras.layers.EinsumDense`.

    Example:
        >>> layer = kq.layers.QuantEinsumDense(
        ...     "abc,cde->abde", output_shape=(None, 2, 16), bias_axes="de",
        ...     kernel_quantizer=kq.quantizers.LSQ(bits=4, channel_axis=(-2, -1)),
        ...     input_quantizer=kq.quantizers.LSQ(bits=8))
    """


@kqrobust_export
class ExportEinsumDense(ExportMixin, keras.layers.EinsumDense):
    """EinsumDense with an 8-bit input FakeQuant; the kernel is stored already
    quantized and its grid written into the converted FULLY_CONNECTED."""


def parse_equation(equation):
    """`(input, kernel, output, out_letters)` of an EinsumDense equation.

    `out_letters` are the kernel letters that appear in the output, in the
    kernel's order. Raises a ValueError when they are not the kernel's
    trailing letters, or not the output's trailing letters in that order.
    """
    try:
        inputs, output = equation.replace(" ", "").split("->")
        input_spec, kernel_spec = inputs.split(",")
    except ValueError:
        raise ValueError(
            f"EinsumDense equation must read 'input,kernel->output'. Received: "
            f"equation={equation!r}"
        ) from None
    out_letters = "".join(c for c in kernel_spec if c in output)
    n = len(out_letters)
    if (
        not out_letters
        or kernel_spec[len(kernel_spec) - n :] != out_letters
        or output[len(output) - n :] != out_letters
    ):
        raise ValueError(
            "kqrobust quantizes EinsumDense kernels with one step per output channel, "
            "and needs the kernel letters that appear in the output to be the kernel's "
            "trailing letters and the output's trailing letters, in the same order "
            f"(e.g. 'abc,cde->abde'). Received: equation={equation!r} (kernel "
            f"'{kernel_spec}', output letters '{out_letters}'). Fix: reorder the kernel "
            "axes, or keep the layer float with layer_overrides={name: {'skip': True}}."
        )
    return input_spec, kernel_spec, output, out_letters


def channel_axes(layer):
    """The kernel's trailing output-channel axes: -1, or (-n, ..., -1)."""
    _, _, _, out_letters = parse_equation(layer.equation)
    bias_axes = getattr(layer, "bias_axes", None)
    if bias_axes and set(bias_axes) != set(out_letters):
        raise ValueError(
            f"EinsumDense '{layer.name}': kqrobust needs bias_axes to be None or the "
            f"kernel's output letters '{out_letters}' (one bias per output channel, as "
            f"the int8 bias of TFLite). Received: bias_axes={bias_axes!r}."
        )
    n = len(out_letters)
    return -1 if n == 1 else tuple(range(-n, 0))


def matmul_form(equation):
    """`(free, contracted, out)` letter counts of a matmul-like equation, else None.

    An input ellipsis counts as leading free axes (`free` then excludes it).
    """
    input_spec, kernel_spec, output, out_letters = parse_equation(equation)
    contracted = kernel_spec[: len(kernel_spec) - len(out_letters)]
    ellipsis = input_spec.startswith("...")
    free = input_spec[3:] if ellipsis else input_spec
    if "." in free or not contracted or not free.endswith(contracted):
        return None
    free = free[: len(free) - len(contracted)]
    expected = ("..." if ellipsis else "") + free + out_letters
    if output != expected or set(free) & set(kernel_spec):
        return None
    return len(free), len(contracted), len(out_letters)


def einsum_matmul(layer, x, kernel):
    """The layer's einsum as one `(-1, K) @ (K, N)` matmul where the equation
    allows it (TFLite FULLY_CONNECTED), else `ops.einsum`."""
    form = matmul_form(layer.equation)
    if form is None:
        return ops.einsum(layer.equation, x, kernel)
    _, contracted, out = form
    kernel_shape = tuple(kernel.shape)
    k = math.prod(kernel_shape[:contracted])
    out_shape = kernel_shape[contracted:]
    y = ops.matmul(ops.reshape(x, (-1, k)), ops.reshape(kernel, (k, math.prod(out_shape))))
    shape = ops.shape(x)
    lead = tuple(shape[: len(shape) - contracted])
    if all(isinstance(d, int) for d in lead[1:]):
        lead = (-1,) + lead[1:]
    return ops.reshape(y, lead + tuple(out_shape))


def fully_connected_layout(kernel, layer):
    """The kernel as TFLite FULLY_CONNECTED weights: `(N, K)`, `N` the
    product of the output-channel axes."""
    out = len(parse_equation(layer.equation)[3])
    return kernel.reshape(-1, math.prod(kernel.shape[kernel.ndim - out :])).T


def export_bias_config(layer, config, has_bias):
    """The export config with (or without) a per-channel bias: `bias_axes`
    are the output letters (EinsumDense has no `use_bias`)."""
    config = dict(config)
    config["bias_axes"] = parse_equation(layer.equation)[3] if has_bias else None
    config["bias_initializer"] = "zeros"
    return config


registry.register_layer_type(
    registry.LayerType(
        keras_class=keras.layers.EinsumDense,
        quant_class=QuantEinsumDense,
        export_class=ExportEinsumDense,
        kind="dense",
        linear_op=einsum_matmul,
        channel_axes=channel_axes,
        # The `(K, N)` matmul's FULLY_CONNECTED weights are `(N, K)`, quantized on axis 0.
        tflite_weights=registry.TfliteWeights(
            FULLY_CONNECTED, fully_connected_layout, axis=0, layer_layout=True
        ),
        export_config=export_bias_config,
    )
)
