"""The layer-type registry: one entry per Keras layer type kqrobust quantizes.

As in Keras' quantization-mode registry, adding a layer type is a
registration, never a branch somewhere else. Everything kqrobust knows about a
type is in its `LayerType`; quantization (`kq.quantize_model`), the export
graph, the TFLite weight rewrite, PTQ, the probes, SAM's perturbed set and
FPQ's CSD all read it.

Example:
    >>> kq.layers.layer_type_of(keras.layers.Conv2D(8, 3)).quant_class
    <class 'kqrobust.layers.conv.QuantConv2D'>
"""

import dataclasses

KINDS = ("conv", "depthwise", "dense")


def activation_nonnegative(layer):
    """Whether the layer's own activation makes its output >= 0."""
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name in NONNEGATIVE_ACTIVATIONS


# Activations whose output is >= 0 whatever their input.
NONNEGATIVE_ACTIVATIONS = frozenset(
    {"relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "exponential", "softplus"}
)


@dataclasses.dataclass(frozen=True)
class TfliteWeights:
    """How the converter lays out a kernel, for writing its int8 grid after conversion.

    Attributes:
        op: the `tflite::BuiltinOperator` code of the op that holds the kernel.
        layout: `kernel (numpy) -> kernel in the op's weight layout`.
        axis: the quantized dimension of the op's weight tensor.
        input_index: the op input that is the activation (TRANSPOSE_CONV: 2,
            after its output shape and weights).
        bias_index: the op input that is the bias, if the op has one.
        layer_layout: `layout` is `(kernel, layer) -> kernel` (the layout
            depends on the layer's configuration, e.g. an EinsumDense
            equation).
    """

    op: int
    layout: object
    axis: int
    input_index: int = 0
    bias_index: int = 2
    layer_layout: bool = False

    def weights_of(self, layer):
        """The layer's kernel (NumPy, float64) in the op's weight layout."""
        import numpy as np

        kernel = np.asarray(layer.kernel, np.float64)
        return self.layout(kernel, layer) if self.layer_layout else self.layout(kernel)


@dataclasses.dataclass(frozen=True)
class LayerType:
    """Everything kqrobust knows about one Keras layer type.

    Attributes:
        keras_class: the Keras class, matched exactly (a subclass of it is a
            different type).
        quant_class: the quantized subclass (`QuantizeMixin`), what
            `quantize_model` clones the layer into.
        export_class: the export-graph subclass (`ExportMixin`): float, with
            TF FakeQuant ops the converters turn into integer kernels.
        kind: "conv", "depthwise" or "dense": which robust-training hooks
            apply (SFP and CSD act on "conv" and "depthwise"; the recipe's
            exclusion tokens "depthwise" and "last_dense" name kinds).
        linear_op: `(layer, x, kernel) -> outputs`, the layer's computation
            without bias and activation; the quantized and the export class
            both call it.
        channel_axes: `layer -> int, tuple or None`, the trailing kernel
            axes that get one weight step each (None: one step per tensor).
        output_channel_axes: `layer -> int or tuple`, the kernel axes that
            index output channels (one BatchNorm channel and one SymReg
            channel each), or None when they are `channel_axes`.
            Conv2DTranspose's `(kh, kw, out, in)` kernel has one step per
            tensor and its output channels on axis -2.
        kernel_fake_quant: the export class puts a per-channel FakeQuant on
            its kernel (the converter accepts it on CONV_2D only); else the
            int8 grid is written after conversion with `tflite_weights`.
        tflite_weights: a `TfliteWeights`, or None.
        output_nonnegative: `layer -> bool`, the sign rule: whether the
            layer's output is >= 0 whatever its input (an unsigned input
            quantizer can then follow it).
        fuses_relu: the converter fuses a following ReLU / ReLU6 into the
            TFLite op, so the layer's output needs no FakeQuant of its own
            (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED); False for an op
            it keeps a separate RELU after (TRANSPOSE_CONV).
        export_config: `(layer, config, has_bias) -> config`, the export
            layer's config with or without a bias, or None for Keras'
            `use_bias` (EinsumDense has `bias_axes` instead).
    """

    keras_class: type
    quant_class: type
    export_class: type
    kind: str
    linear_op: object
    channel_axes: object
    output_channel_axes: object = None
    kernel_fake_quant: bool = False
    tflite_weights: TfliteWeights = None
    output_nonnegative: object = activation_nonnegative
    fuses_relu: bool = True
    export_config: object = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}. Received: kind={self.kind!r}")
        if self.kernel_fake_quant == (self.tflite_weights is not None):
            raise ValueError(
                f"{self.keras_class.__name__}: exactly one of kernel_fake_quant and "
                "tflite_weights says how the int8 kernel grid reaches the .tflite."
            )


_BY_CLASS = {}
_TYPES = []


def register_layer_type(layer_type, override=False):
    """Adds a `LayerType`; its Keras, quantized and export classes map to it.

    Raises a ValueError when the Keras class is registered already, unless
    `override`.
    """
    known = _BY_CLASS.get(layer_type.keras_class)
    if known is not None and not override:
        raise ValueError(
            f"{layer_type.keras_class.__name__} is registered already (quantized class "
            f"{known.quant_class.__name__}). Fix: pass override=True to replace it."
        )
    if known is not None:
        _TYPES.remove(known)
    _TYPES.append(layer_type)
    for cls in (layer_type.keras_class, layer_type.quant_class, layer_type.export_class):
        _BY_CLASS[cls] = layer_type
    return layer_type


def layer_type_of(layer):
    """The `LayerType` of `layer` (Keras, quantized or export class), or None."""
    return _BY_CLASS.get(type(layer))


def layer_types():
    """Every registered `LayerType`, in registration order."""
    return list(_TYPES)


def is_quantizable(layer):
    """True for a layer of a registered Keras type (not yet quantized)."""
    layer_type = layer_type_of(layer)
    return layer_type is not None and type(layer) is layer_type.keras_class


def kernel_channel_axes(layer):
    """The kernel axes of `layer` that index output channels, or None."""
    layer_type = layer_type_of(layer)
    return None if layer_type is None else layer_type.channel_axes(layer)


def kernel_output_axes(layer):
    """The kernel axes of `layer` that index its output channels, or None.

    The registered `output_channel_axes`, else its `channel_axes`.
    """
    layer_type = layer_type_of(layer)
    if layer_type is None:
        return None
    if layer_type.output_channel_axes is not None:
        return layer_type.output_channel_axes(layer)
    return layer_type.channel_axes(layer)


def channel_shape(kernel_shape, channel_axes):
    """The shape of a kernel's output-channel axes (in axis order)."""
    axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
    return tuple(kernel_shape[a] for a in sorted(a % len(kernel_shape) for a in axes))


def channel_broadcast_shape(kernel_shape, channel_axes):
    """The shape that broadcasts per-channel values against the kernel: the
    channel axes' sizes, 1 on every other axis (any channel axes, trailing
    or not)."""
    axes = (channel_axes,) if isinstance(channel_axes, int) else tuple(channel_axes)
    axes = {a % len(kernel_shape) for a in axes}
    return tuple(d if i in axes else 1 for i, d in enumerate(kernel_shape))


def layers_of_kind(layers, *kinds):
    """The layers in `layers` whose registered kind is one of `kinds`."""
    return [
        layer
        for layer in layers
        if layer_type_of(layer) is not None and layer_type_of(layer).kind in kinds
    ]
