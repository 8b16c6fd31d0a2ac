"""Rewrite rules: Keras layer types quantized as a chain of registered types.

Some layer types have no integer kernel of their own. TFLite has no separable
convolution: the converter lowers `SeparableConv2D` to DEPTHWISE_CONV_2D +
CONV_2D, and tfmot quantizes it by first rewriting it into DepthwiseConv2D +
Conv2D (its `SeparableConvQuantize` transform). A rewrite rule does the same
before `kq.quantize_model` plans the layers: `expand(layer)` returns the
layers computing the same function, which are then quantized like any other
layer of their (registered) types. Adding such a type is a registration
(`register_rewrite`), as for `kq.layers.registry`.

Example:
    >>> inputs = keras.Input((8, 8, 3))
    >>> model = keras.Model(inputs, keras.layers.SeparableConv2D(4, 3, name="sep")(inputs))
    >>> model, overrides = kq.layers.rewrites.expand_rewrites(model)
    >>> [layer.name for layer in model.layers[1:]]
    ['sep_depthwise', 'sep_pointwise']
"""

import re

import keras

from kqrobust import model_graph

_RULES = {}
_CONNECT = {}


def register_rewrite(keras_class, expand, override=False, connect=None):
    """Registers `expand(layer) -> (layers, copy_weights)` for `keras_class`.

    Args:
        keras_class: the Keras class, matched exactly (a subclass is a
            different type).
        expand: `layer -> (layers, copy_weights)`: new, unbuilt layers that
            applied in order compute `layer`, and `copy_weights(layers)`,
            called once they are built, that copies `layer`'s weights in.
            Each new layer's name starts with `layer.name`.
        override: replace a rule registered already.
        connect: optional `(layer, layers, args, kwargs, context) -> outputs`:
            how one call of `layer` (its Keras-tensor `args` and `kwargs`)
            is computed with the new `layers`, for layers that are not a
            chain (MultiHeadAttention: query, key, value, attention,
            output). It may append layers to `layers`. `context` is
            `expand_rewrites`'s. It returns None to keep `layer` for this
            call (the rule warns, or raises when `context["strict"]`).

    Raises:
        ValueError: `keras_class` has a rule already and not `override`.
    """
    if keras_class in _RULES and not override:
        raise ValueError(
            f"{keras_class.__name__} has a rewrite rule already. Fix: pass "
            "override=True to replace it."
        )
    _RULES[keras_class] = expand
    _CONNECT[keras_class] = connect


def rewrite_of(layer):
    """The registered `expand` function of `layer`'s exact type, or None."""
    return _RULES.get(type(layer))


def rewritten_classes():
    """The Keras classes that have a rewrite rule."""
    return list(_RULES)


def _rewritable(model):
    return [layer for layer in model_graph.flat_layers(model) if rewrite_of(layer)]


def expand_rewrites(model, layer_overrides=None, context=None):
    """Replaces every layer that has a rewrite rule by its expansion.

    The other layers are shared with `model`; the new layers get the
    replaced layer's weights. A model (or nested model) without such layers
    is returned as it is. A Sequential model that holds one becomes the
    equivalent Functional model (Keras' `clone_model` takes a
    `call_function` for Functional models only); nested models stay nested.

    Args:
        model: a built Sequential or Functional model.
        layer_overrides: `kq.quantize_model`'s `layer_overrides`, or None.
            A key naming (or, as a regex, matching) a replaced layer applies
            to all the layers that replace it.
        context: a dict passed to the rules' `connect` functions
            (`kq.quantize_model` passes `recipe` and `strict`).

    Returns:
        `(model, layer_overrides)`: the expanded model and the overrides
        with their keys extended to the new layer names.
    """
    targets = _rewritable(model)
    if not targets:
        return model, layer_overrides
    expanded = {}  # id(layer) -> its new layers, so a shared layer stays shared.
    copy_weights = {}  # id(layer) -> the copy still to do, once its new layers are built.
    models = {}  # id(model) -> its expanded model, so a shared model stays shared.

    def call_layer(layer, *args, **kwargs):
        expand = rewrite_of(layer)
        if expand is None:
            if isinstance(layer, keras.Model):
                layer = expand_model(layer)
            return layer(*args, **kwargs)
        new = expanded.get(id(layer))
        if new is None:
            new, copy_weights[id(layer)] = expand(layer)
            expanded[id(layer)] = new
        connect = _CONNECT.get(type(layer))
        if connect is not None:
            outputs = connect(layer, new, args, kwargs, dict(context or {}))
            if outputs is None:  # This call is kept as it is.
                return layer(*args, **kwargs)
        else:
            outputs = new[0](*args, **kwargs)
            for new_layer in new[1:]:
                outputs = new_layer(outputs)
        copy = copy_weights.pop(id(layer), None)
        if copy is not None:
            copy(new)
        return outputs

    def expand_model(sub):
        if id(sub) in models:
            return models[id(sub)]
        if not _rewritable(sub):
            result = sub
        elif isinstance(sub, keras.Sequential):
            source = sub.inputs[0]
            inputs = keras.Input(shape=tuple(source.shape[1:]), dtype=source.dtype)
            outputs = inputs
            for layer in sub.layers:
                outputs = call_layer(layer, outputs)
            result = keras.Model(inputs, outputs, name=sub.name)
        else:
            result = keras.models.clone_model(
                sub,
                clone_function=lambda layer: (
                    expand_model(layer) if isinstance(layer, keras.Model) else layer
                ),
                call_function=call_layer,
            )
        models[id(sub)] = models[id(result)] = result
        return result

    clone = expand_model(model)
    names = {layer.name: [new.name for new in expanded[id(layer)]] for layer in targets}
    return clone, _expand_overrides(layer_overrides, names)


def _expand_overrides(layer_overrides, names):
    """`layer_overrides` with each key also matching the layers that replace
    the layers it names: `{old name: [new names]}`."""
    if not layer_overrides:
        return layer_overrides
    expanded = {}
    for key, override in layer_overrides.items():
        if key in names:
            matched = names[key]
        else:
            try:
                pattern = re.compile(key)
            except re.error:
                pattern = None  # resolve_overrides reports it.
            matched = [
                new
                for old, news in names.items()
                if pattern is not None and pattern.fullmatch(old)
                for new in news
            ]
        if matched:
            alternatives = ([] if key in names else [f"(?:{key})"]) + [
                re.escape(n) for n in matched
            ]
            key = "|".join(alternatives)
        expanded[key] = override
    return expanded
