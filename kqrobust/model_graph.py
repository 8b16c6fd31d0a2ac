"""Reading a Keras model's structure through public APIs only."""

import functools
import re

import keras


@functools.cache
def _functional_class():
    inputs = keras.Input((1,))
    return type(keras.Model(inputs, keras.layers.Identity()(inputs)))


def is_graph_model(model):
    """True for Sequential and Functional models (not subclassed ones)."""
    return isinstance(model, (keras.Sequential, _functional_class()))


def check_graph_model(model, what="quantize_model"):
    """Raises a clear error unless `model` is a built Sequential/Functional model."""
    if not isinstance(model, keras.Model):
        raise ValueError(f"{what} expects a keras.Model. Received: {type(model).__name__}")
    if not is_graph_model(model):
        raise ValueError(
            f"{what} supports Sequential and Functional models only. Received: "
            f"a subclassed model of type '{type(model).__name__}'. Fix: rebuild "
            "it with the Functional API (keras.Model(inputs, outputs)) or as a "
            "keras.Sequential, or use kq.layers.QuantConv2D / QuantDense in "
            "your own model."
        )
    if isinstance(model, keras.Sequential) and not model.built:
        raise ValueError(
            f"{what} needs a built model. Received: an unbuilt Sequential "
            f"'{model.name}'. Fix: start it with keras.Input(shape=...) or call "
            "model.build(input_shape)."
        )


def flat_layers(model):
    """All layers in topological order, descending into nested models."""
    for layer in model.layers:
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            yield from flat_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            yield layer


def operations(model):
    """Every layer and Keras-tensor operation of one graph level, topological.

    A Functional model's `operations` also hold the calls written as
    arithmetic on Keras tensors (`x + 3`, `keras.ops.relu6(x)`): they are
    nodes of the Functional config like layers, but not in `model.layers`.
    Nested models are one operation each.
    """
    if isinstance(model, keras.Sequential):
        return list(model.layers)
    return list(model.operations)


def output_layer_names(model):
    """Names of the layers (or operations) whose outputs are the model's outputs."""
    if isinstance(model, keras.Sequential):
        return [model.layers[-1].name]
    outputs = model.get_config().get("output_layers", [])
    if outputs and isinstance(outputs[0], str):
        outputs = [outputs]
    return [entry[0] for entry in outputs]


def reserve_names(model):
    """Advances Keras' automatic names past those already used in `model`.

    Operations created later (`x + y` names itself `add`, `add_1`, ...) then
    get names the model does not hold. A model loaded from a `.keras` file in
    a new process keeps its saved names while Keras' name counters start at
    zero, so without this a rewrite of it could create a second `add`.
    """
    for operation in _all_operations(model):
        match = re.fullmatch(r"(.+?)(?:_(\d+))?", operation.name)
        prefix, index = match.group(1), int(match.group(2) or 0)
        while keras.backend.get_uid(prefix) <= index:
            pass


def _all_operations(model):
    for operation in operations(model):
        yield operation
        if isinstance(operation, keras.Model) and is_graph_model(operation):
            yield from _all_operations(operation)


def is_layer(operation):
    """False for Keras-tensor arithmetic (`x + 3`), which has no weights."""
    return isinstance(operation, keras.layers.Layer)


def inbound_layer_names(node_config):
    """Names of the layers (and operations) whose outputs feed one call in a
    Functional config."""
    names = []

    def visit(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                names.append(obj["config"]["keras_history"][0])
            else:
                for value in obj.values():
                    visit(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                visit(value)

    visit(node_config)
    return names


def inbound_layers(model):
    """Maps each layer name to the names of the layers feeding it (one level).

    Operations on Keras tensors (`x + 3`) are entries too: the Functional
    config lists them among its layers, named as in `operations(model)`.
    """
    if isinstance(model, keras.Sequential):
        layers = [layer for layer in model.layers]
        return {layers[i].name: ([layers[i - 1].name] if i else []) for i in range(len(layers))}
    feeds = {}
    for layer_config in model.get_config()["layers"]:
        feeds[layer_config["name"]] = inbound_layer_names(layer_config.get("inbound_nodes", []))
    return feeds


def consumers(model):
    """Maps each layer or operation name to the names of those reading its
    output (one level, `inbound_layers` inverted), in topological order; a
    reader that takes the tensor twice (`Multiply()([x, x])`) is listed once."""
    readers = {}
    for name, sources in inbound_layers(model).items():
        for source in dict.fromkeys(sources):
            readers.setdefault(source, []).append(name)
    return readers


def nonnegative_outputs(model, output_is_nonnegative):
    """Names of layers whose outputs are provably >= 0, by propagation.

    `output_is_nonnegative(layer, inputs_nonnegative)` is the per-layer rule.
    Nested models are treated as producing signed outputs.
    """
    feeds = inbound_layers(model)
    by_name = {layer.name: layer for layer in model.layers}
    result = set()
    for layer in model.layers:  # topological order
        inputs = feeds.get(layer.name, [])
        inputs_nonneg = bool(inputs) and all(name in result for name in inputs)
        if not isinstance(layer, (keras.Model, keras.layers.InputLayer)) and output_is_nonnegative(
            by_name[layer.name], inputs_nonneg
        ):
            result.add(layer.name)
    return result, feeds
