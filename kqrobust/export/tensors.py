"""Which tensors of the export graph get a FakeQuant, and where its range comes from.

A full-integer TFLite model needs a quantization range on every tensor. The
export graph gives every tensor one, so the converter never calibrates on
its own (mixing its calibration with FakeQuant ranges misquantizes biases:
TF 2.21 quantizes a bias with the *calibrated* input scale while the kernel
uses the FakeQuant one). A layer's output gets a FakeQuant unless:

- the layer keeps its input's scale (pooling, reshapes, dropout, folded BN):
  its input's FakeQuant covers it;
- its only consumer is a ReLU / linear activation that TFLite fuses into it
  (Conv2D, DepthwiseConv2D, Dense, Add): the activation's output carries it;
- its only consumer is a Concatenate: TFLite quantizes the inputs of an
  int8 CONCATENATION at its output scale, so the concatenation's FakeQuant
  covers it.

Keras-tensor operations of a Functional graph (`x + 3`, `x * y`,
`keras.ops.relu6(x)`) are tensors like layer outputs, named as in
`model.operations`.

The range is the one TFLite fixes for sigmoid, softmax and tanh outputs
(`FIXED_RANGES`), else the learned range of the first quantized layer that
reads the tensor (looking through scale-keeping layers), else the min/max
observed on the representative data, as the converter's own calibration
would take it.
"""

import keras

from kqrobust import model_graph
from kqrobust.layers.quant_identity import QuantIdentity

# Layers whose output has the quantization of their (single) input.
SCALE_KEEPING_LAYERS = (
    keras.layers.MaxPooling2D,
    keras.layers.MaxPooling1D,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping2D,
    keras.layers.Identity,
    keras.layers.Permute,
    QuantIdentity,  # An Identity in the export graph; its range is on its input.
)

_GLOBAL_AVERAGE_POOLING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
)


def keeps_scale(layer, readers=()):
    """Whether `layer`'s output tensor carries its input's int8 scale.

    The `SCALE_KEEPING_LAYERS`, and a global average pooling over axes of
    size 1 whose output keeps the input's shape (`keepdims=True`, or read
    only by Reshape layers, as squeeze-excite blocks read it): an identity,
    which the converter removes with its requantization. EfficientNetB0 at
    32x32 has such squeeze-excite blocks from block 6 on; LiteRT reads their
    1x1 convolution's input on the grid of the tensor before the pooling.

    Args:
        layer: a layer or operation of the graph.
        readers: the layers and operations that read its output.
    """
    if isinstance(layer, SCALE_KEEPING_LAYERS):
        return True
    if not isinstance(layer, _GLOBAL_AVERAGE_POOLING):
        return False
    shape = layer.input.shape
    pooled = shape[1:-1] if layer.data_format == "channels_last" else shape[2:]
    reshaped = bool(readers) and all(isinstance(r, keras.layers.Reshape) for r in readers)
    return all(d == 1 for d in pooled) and (layer.keepdims or reshaped)


# Activations TFLite fuses into the op before them.
FUSED_ACTIVATIONS = frozenset({"relu", "relu6", "linear"})

# Keras-tensor operations (`keras.ops.relu6(x)` in a Functional graph), by
# class name, that TFLite fuses the same way.
FUSED_OPERATIONS = frozenset({"Relu", "Relu6"})

# Outputs whose int8 quantization TFLite fixes (its LOGISTIC, SOFTMAX and TANH
# kernels): scale 1/256 and zero point -128, or 1/128 and 0. A FakeQuant on
# `[0, 255/256]` (`[-1, 127/128]`) has exactly that scale and zero point.
FIXED_RANGES = {
    "sigmoid": (0.0, 255.0 / 256.0),
    "softmax": (0.0, 255.0 / 256.0),
    "tanh": (-1.0, 127.0 / 128.0),
}

# The name that stands for the model input in the plans.
INPUT = "__input__"


def _fusable_activation(layer):
    if not model_graph.is_layer(layer):
        return type(layer).__name__ in FUSED_OPERATIONS
    if isinstance(layer, keras.layers.ReLU):
        config = layer.get_config()
        return (
            not config.get("negative_slope")
            and not config.get("threshold")
            and config.get("max_value") in (None, 6.0)
        )
    if isinstance(layer, keras.layers.Activation):
        return getattr(layer.activation, "__name__", None) in FUSED_ACTIVATIONS
    return False


def fixed_range(layer):
    """The range TFLite fixes for the output of `layer` (`FIXED_RANGES`), or None."""
    if not model_graph.is_layer(layer):
        return FIXED_RANGES.get(type(layer).__name__.lower())
    if isinstance(layer, keras.layers.Softmax):
        return FIXED_RANGES["softmax"]
    if isinstance(layer, keras.layers.Activation):
        return FIXED_RANGES.get(getattr(layer.activation, "__name__", None))
    return None


def _concatenates(layer):
    """TFLite's int8 CONCATENATION gives its inputs its output scale: an input
    read by nothing else is quantized once, at the concatenation's range (a
    FakeQuant of its own would round it twice in Keras, once in TFLite)."""
    if not model_graph.is_layer(layer):
        return type(layer).__name__ == "Concatenate"
    return isinstance(layer, keras.layers.Concatenate)


class _TensorGraph:
    """The model's tensors (one per layer or operation output, and `INPUT`)
    with their consumers, and the rules that decide where a range comes from."""

    def __init__(self, model, input_ranges, folded_batchnorms, fusing_layers):
        self.input_ranges = input_ranges
        self.folded_batchnorms = folded_batchnorms
        self.fusing_layers = fusing_layers
        feeds = model_graph.inbound_layers(model)
        self.operations = model_graph.operations(model)
        self.by_name = {op.name: op for op in self.operations}
        self.consumers = {}
        for name, sources in feeds.items():
            for source in sources:
                self.consumers.setdefault(source, []).append(name)
        self.consumers[INPUT] = self._input_users(feeds)

    def _input_users(self, feeds):
        """The operations that read the model input: the consumers of an
        `InputLayer`, and operations with no inbound layer at all."""
        users = [
            op.name
            for op in self.operations
            if not isinstance(op, keras.layers.InputLayer) and not feeds.get(op.name)
        ]
        for op in self.operations:
            if isinstance(op, keras.layers.InputLayer):
                users += self.consumers.get(op.name, [])
        return users

    def tensor_names(self):
        """`INPUT`, then every operation output, in topological order."""
        return [INPUT] + [
            op.name for op in self.operations if not isinstance(op, keras.layers.InputLayer)
        ]

    def keeps_scale(self, name):
        """The output carries its input's scale (a folded BN, pooling, reshapes)."""
        readers = [self.by_name[r] for r in self.consumers.get(name, [])]
        return name in self.folded_batchnorms or keeps_scale(self.by_name[name], readers)

    def learned_range(self, name):
        """The learned input range of the first consumer of `name` that has
        one, looking through consumers that keep the scale; None if none does."""
        for consumer in self.consumers.get(name, []):
            found = self.input_ranges.get(consumer)
            if isinstance(found, dict):  # One range per input tensor (attention)
                found = found.get(name)
            if found is not None:
                return found
            if self.keeps_scale(consumer):
                found = self.learned_range(consumer)
                if found is not None:
                    return found
        return None

    def fuses(self, name, users):
        """The output has no scale of its own: a fused activation follows, or
        a concatenation that quantizes it at its own output scale."""
        if len(users) != 1:
            return False
        user = users[0]
        if user in self.folded_batchnorms:
            return self.fuses(name, self.consumers.get(user, []))
        if _concatenates(self.by_name[user]):
            return True
        return name in self.fusing_layers and _fusable_activation(self.by_name[user])

    def has_own_range(self, name):
        """Whether the tensor gets a FakeQuant of its own."""
        return name == INPUT or not (
            self.keeps_scale(name) or self.fuses(name, self.consumers.get(name, []))
        )

    def range_of(self, name):
        """The tensor's fixed range (sigmoid, softmax, ...), else the learned
        range of a consumer, else None (calibrated from data)."""
        found = fixed_range(self.by_name[name]) if name != INPUT else None
        return found if found is not None else self.learned_range(name)


def plan_tensors(model, input_ranges, folded_batchnorms, fusing_layers):
    """Plans the FakeQuant of every layer output and of the model input.

    Keras-tensor operations (`x + 3`, `x * y`) are planned like layers: each
    output gets its FakeQuant, under the operation's name.

    Args:
        model: the source model (Sequential or Functional, one input).
        input_ranges: `{layer name: (min, max)}` of the layers whose input
            quantizer has a learned range, or `{layer name: {input tensor
            name: (min, max)}}` for a layer with one range per input.
        folded_batchnorms: names of the BatchNormalization layers folded away
            (they keep their input's scale).
        fusing_layers: names of the layers TFLite fuses a following ReLU into.

    Returns:
        `(learned, calibrate)`: `learned` maps tensor names (a layer name,
        or `INPUT` for the model input) to a learned range;
        `calibrate` lists the tensor names whose range comes from data.
    """
    graph = _TensorGraph(model, input_ranges, folded_batchnorms, fusing_layers)
    learned, calibrate = {}, []
    for name in graph.tensor_names():
        if not graph.has_own_range(name):
            continue
        found = graph.range_of(name)
        if found is not None:
            learned[name] = found
        else:
            calibrate.append(name)
    return learned, calibrate


def read_ranges(model, names, tensor_ranges, folded_batchnorms):
    """The FakeQuant range of the tensor each layer in `names` reads.

    Follows each layer's single input back through scale-keeping layers
    (pooling, reshapes, padding, folded BN) to the tensor that carries a
    FakeQuant in `tensor_ranges` (a layer name, or `INPUT` for the model
    input): its range is the layer's input range in the integer model.

    Args:
        model: the source model (Sequential or Functional, one input).
        names: layer names to look up.
        tensor_ranges: `{tensor name: (min, max)}` from `plan_tensors`.
        folded_batchnorms: names of the folded BatchNormalization layers.

    Returns:
        `{name: (min, max)}` for the layers whose input range was found (a
        layer with several inputs, or reading an unannotated tensor, is left
        out).
    """
    feeds = model_graph.inbound_layers(model)
    consumers = model_graph.consumers(model)
    by_name = {op.name: op for op in model_graph.operations(model)}

    def tensor_of(name):
        layer = by_name.get(name)
        if layer is None or isinstance(layer, keras.layers.InputLayer):
            return INPUT
        return name

    found = {}
    for name in names:
        sources = feeds.get(name) or [INPUT]
        while len(sources) == 1:
            source = tensor_of(sources[0])
            if source in tensor_ranges:
                found[name] = tensor_ranges[source]
                break
            readers = [by_name[r] for r in consumers.get(source, [])]
            if source == INPUT or not (
                source in folded_batchnorms or keeps_scale(by_name[source], readers)
            ):
                break
            sources = feeds.get(source) or [INPUT]
    return found
