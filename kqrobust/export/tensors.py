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
)

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
        return not config.get("negative_slope") and not config.get("threshold") and \
            config.get("max_value") in (None, 6.0)
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
    feeds = model_graph.inbound_layers(model)
    consumers = {}
    for name, sources in feeds.items():
        for source in sources:
            consumers.setdefault(source, []).append(name)
    operations = model_graph.operations(model)
    by_name = {op.name: op for op in operations}

    def keeps_scale(name):
        layer = by_name[name]
        return name in folded_batchnorms or isinstance(layer, SCALE_KEEPING_LAYERS)

    def learned_range(name):
        for consumer in consumers.get(name, []):
            found = input_ranges.get(consumer)
            if isinstance(found, dict):  # One range per input tensor (attention)
                found = found.get(name)
            if found is not None:
                return found
            if keeps_scale(consumer):
                found = learned_range(consumer)
                if found is not None:
                    return found
        return None

    def fuses(name, users):
        """The output has no scale of its own: a fused activation follows, or
        a concatenation that quantizes it at its own output scale."""
        if len(users) != 1:
            return False
        user = users[0]
        if user in folded_batchnorms:
            return fuses(name, consumers.get(user, []))
        if _concatenates(by_name[user]):
            return True
        return name in fusing_layers and _fusable_activation(by_name[user])

    input_users = [op.name for op in operations
                   if not isinstance(op, keras.layers.InputLayer) and not feeds.get(op.name)]
    for op in operations:
        if isinstance(op, keras.layers.InputLayer):
            input_users += consumers.get(op.name, [])
    consumers[INPUT] = input_users

    learned, calibrate = {}, []
    names = [INPUT] + [op.name for op in operations
                       if not isinstance(op, keras.layers.InputLayer)]
    for name in names:
        if name != INPUT and (keeps_scale(name) or fuses(name, consumers.get(name, []))):
            continue
        found = fixed_range(by_name[name]) if name != INPUT else None
        if found is None:
            found = learned_range(name)
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
            if source == INPUT or not (source in folded_batchnorms or isinstance(
                    by_name[source], SCALE_KEEPING_LAYERS)):
                break
            sources = feeds.get(source) or [INPUT]
    return found
