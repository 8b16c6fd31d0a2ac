"""The float model a trained (quantized or robustified) model stands for.

A `QuantModel` computes with `Q_w(transform(W))`. Its *effective* float
weights are `transform(W)` (SatNL's `alpha * tanh(W / alpha)` folded in),
without fake quantization. `float_view` rebuilds the model with plain Keras
layers holding those weights, so it can be quantized again at any bit-width,
by any range rule, without fine-tuning.
"""

import keras

from kqrobust import model_graph
from kqrobust.layers import HOOK_KEYS
from kqrobust.layers import QuantIdentity
from kqrobust.layers import QuantizeMixin
from kqrobust.layers import registry


def _float_class(layer):
    if isinstance(layer, QuantizeMixin):
        return registry.layer_type_of(layer).keras_class
    return type(layer)


def _clone_layer(layer, add_bias):
    config = {k: v for k, v in layer.get_config().items() if k not in HOOK_KEYS}
    cls = _float_class(layer)
    if add_bias and registry.layer_type_of(layer) is not None and config.get("use_bias") is False:
        config["use_bias"] = True
        config["bias_initializer"] = "zeros"
    return cls.from_config(config)


def _copy_effective_weights(source, target):
    """Copies weights layer by layer; quantized layers give `transform(W)`."""
    kept = (l for l in model_graph.flat_layers(source) if not isinstance(l, QuantIdentity))
    for src, dst in zip(kept, model_graph.flat_layers(target)):
        if isinstance(src, QuantizeMixin):
            dst.kernel.assign(src.transformed_kernel())
        elif registry.is_quantizable(src):
            dst.kernel.assign(src.kernel)
        else:
            dst.set_weights(src.get_weights())
            continue
        if getattr(src, "bias", None) is not None:
            dst.bias.assign(src.bias)


def float_view(model, add_bias=False):
    """A plain Keras copy of `model` computing with its effective float weights.

    Quantized layers (`QuantConv2D`, `QuantDepthwiseConv2D`, `QuantDense`,
    with or without quantizers, e.g. from `kq.quantize_model` or
    `kq.robustify`) become their Keras base classes with
    `layer.transformed_kernel()` as kernel; quantizer variables, weight
    transforms, perturbations and kernel losses are dropped, and the
    `QuantIdentity` layers are left out (a float model has no tensor
    quantizers; `kq.quantize_model` puts them back). Every other layer is
    cloned with its weights (BatchNorm included). Layer names are kept.

    Args:
        model: a built Sequential or Functional model (a `QuantModel` too).
        add_bias: give Conv2D, DepthwiseConv2D and Dense layers without a
            bias a zero bias, so bias correction and reconstruction can shift
            it (BatchNorm folding at export absorbs it).

    Returns:
        A new Functional `keras.Model` sharing no variables with `model`.

    Example: `kq.ptq.quantize(float_view(qat_model), x_calib, method="mse",
    weight_bits=3)`, run in docs/ptq_evaluation.md.
    """
    model_graph.check_graph_model(model, "float_view")
    identities = {l.name for l in model_graph.flat_layers(model) if isinstance(l, QuantIdentity)}

    def call_layer(layer, *args, **kwargs):
        return args[0] if layer.name in identities else layer(*args, **kwargs)

    if identities and isinstance(model, keras.Sequential):  # call_function: Functional only
        model = keras.Model(model.inputs, model.outputs, name=model.name)
    clone = keras.models.clone_model(
        model,
        # A QuantIdentity is never called (`call_layer`): no clone of it is needed.
        clone_function=lambda layer: (
            layer if layer.name in identities else _clone_layer(layer, add_bias)
        ),
        call_function=call_layer if identities else None,
        recursive=True,
    )
    _copy_effective_weights(model, clone)
    return keras.Model(clone.inputs, clone.outputs, name=f"{model.name}_float")
