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
    >>> model, overrides = kq.layers.rewrites.expand_rewrites(model)
    >>> [l.name for l in model.layers]  # "sep" became "sep_depthwise", "sep_pointwise"
"""

import re

import keras

from kqrobust import model_graph

_RULES = {}


def register_rewrite(keras_class, expand, override=False):
    """Registers `expand(layer) -> (layers, copy_weights)` for `keras_class`.

    Args:
        keras_class: the Keras class, matched exactly (a subclass is a
            different type).
        expand: `layer -> (layers, copy_weights)`: new, unbuilt layers that
            applied in order compute `layer`, and `copy_weights(layers)`,
            called once they are built, that copies `layer`'s weights in.
            Each new layer's name starts with `layer.name`.
        override: replace a rule registered already.

    Raises:
        ValueError: `keras_class` has a rule already and not `override`.
    """
    if keras_class in _RULES and not override:
        raise ValueError(
            f"{keras_class.__name__} has a rewrite rule already. Fix: pass "
            "override=True to replace it.")
    _RULES[keras_class] = expand


def rewrite_of(layer):
    """The registered `expand` function of `layer`'s exact type, or None."""
    return _RULES.get(type(layer))


def rewritten_classes():
    """The Keras classes that have a rewrite rule."""
    return list(_RULES)


def _rewritable(model):
    return [layer for layer in model_graph.flat_layers(model) if rewrite_of(layer)]


def expand_rewrites(model, layer_overrides=None):
    """Replaces every layer that has a rewrite rule by its expansion.

    The other layers are shared with `model`; the new layers get the
    replaced layer's weights. A model without such layers is returned as it
    is. Sequential and nested models are flattened first (Keras'
    `clone_model` takes a `call_function` for Functional models only).

    Args:
        model: a built Sequential or Functional model.
        layer_overrides: `kq.quantize_model`'s `layer_overrides`, or None.
            A key naming (or, as a regex, matching) a replaced layer applies
            to all the layers that replace it.

    Returns:
        `(model, layer_overrides)`: the expanded model and the overrides
        with their keys extended to the new layer names.
    """
    targets = _rewritable(model)
    if not targets:
        return model, layer_overrides
    from kqrobust.export import flatten  # Lazy: kqrobust.export imports the layers.

    if flatten.needs_flattening(model):
        model = flatten.flatten_model(model)
    expanded = {}  # id(layer) -> its new layers, so a shared layer stays shared.

    def call_layer(layer, *args, **kwargs):
        expand = rewrite_of(layer)
        if expand is None:
            return layer(*args, **kwargs)
        new = expanded.get(id(layer))
        copy_weights = None
        if new is None:
            new, copy_weights = expand(layer)
            expanded[id(layer)] = new
        outputs = new[0](*args, **kwargs)
        for new_layer in new[1:]:
            outputs = new_layer(outputs)
        if copy_weights is not None:
            copy_weights(new)
        return outputs

    clone = keras.models.clone_model(model, clone_function=lambda layer: layer,
                                     call_function=call_layer)
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
            matched = [new for old, news in names.items()
                       if pattern is not None and pattern.fullmatch(old) for new in news]
        if matched:
            alternatives = ([] if key in names else [f"(?:{key})"]) + [re.escape(n) for n in matched]
            key = "|".join(alternatives)
        expanded[key] = override
    return expanded
