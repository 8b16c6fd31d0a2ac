"""`quantize_model`: clone a Keras model with quantized layers."""

import re
import warnings

import keras

from kqrobust import model_graph
from kqrobust import tensor_coverage
from kqrobust.configs import layer_table
from kqrobust.configs.planner import plan_layer
from kqrobust.configs.planner import resolve_overrides
from kqrobust.configs.planner import robust_hooks
from kqrobust.configs.recipe import get_recipe
from kqrobust.io_utils import print_msg
from kqrobust.layers import QuantizeMixin
from kqrobust.layers import registry
from kqrobust.layers import rewrites
from kqrobust.quantizers.base import check_bits
from kqrobust.recalibration import initialize_activation_steps
from kqrobust.training.quant_model import QuantModel


def _plan(model, recipe, weight_bits, activation_bits, layer_overrides, strict):
    """One QuantizeConfig (or None) per quantizable layer name."""
    quantizable = _quantizable_layers(model, strict)
    nonnegative = _nonnegative_inputs(model)
    names = [layer.name for layer in quantizable]
    overrides = resolve_overrides(layer_overrides, names)
    edges = {names[0], names[-1]} if recipe.first_last_bits else set()
    hooks = robust_hooks(
        recipe,
        [
            (layer.name, registry.layer_type_of(layer).kind, registry.kernel_output_axes(layer))
            for layer in quantizable
            if not overrides[layer.name].get("skip")
        ],
    )
    plans = {}
    for layer in quantizable:
        w_bits, a_bits = weight_bits, activation_bits
        if layer.name in edges:
            w_bits = a_bits = recipe.first_last_bits
        plans[layer.name] = plan_layer(
            recipe,
            w_bits,
            a_bits,
            layer.name in nonnegative,
            overrides[layer.name],
            registry.kernel_channel_axes(layer),
            hooks=hooks.get(layer.name),
            name=layer.name,
        )
    return plans


def _quantizable_layers(model, strict):
    """The model's registered layers, in order; unsupported weighted layers raise or warn."""
    layers = list(model_graph.flat_layers(model))
    quantizable = [layer for layer in layers if registry.is_quantizable(layer)]
    unsupported = [layer for layer in layers if layer_table.is_unsupported_weighted(layer)]
    if unsupported:
        names = ", ".join(f"'{l.name}' ({type(l).__name__})" for l in unsupported)
        if strict:
            raise ValueError(
                f"Unsupported layers with weights: {names}. kqrobust quantizes "
                f"{sorted(t.keras_class.__name__ for t in registry.layer_types())}. "
                "Fix: pass strict=False to keep them float, or replace them."
            )
        # stacklevel: the warning names quantize_model's caller.
        warnings.warn(f"These layers are not supported and stay float: {names}.", stacklevel=4)
    if not quantizable:
        raise ValueError(
            f"Model '{model.name}' has no quantizable layer (registered types: "
            f"{sorted(t.keras_class.__name__ for t in registry.layer_types())}). "
            "Nothing to quantize."
        )
    return quantizable


def _nonnegative_inputs(model):
    """Names of the layers whose inputs are all non-negative (they get unsigned grids)."""
    nonnegative = set()
    for sub in [model] + [l for l in model.layers if isinstance(l, keras.Model)]:
        outputs, feeds = model_graph.nonnegative_outputs(sub, layer_table.output_is_nonnegative)
        nonnegative |= {
            name
            for name, sources in feeds.items()
            if sources and all(src in outputs for src in sources)
        }
    return nonnegative


def _path_in(layer, variable):
    """The variable's path below its layer (`kernel`, `query/kernel`)."""
    prefix = f"{layer.path}/"
    path = variable.path
    return path[len(prefix) :] if path.startswith(prefix) else path


def _copy_weights(source, target):
    """Copies float weights layer by layer, then sets the kernel steps from them.

    Layers are matched by name (the clone keeps them; its `QuantIdentity`
    layers, which `source` has not, can change the layer order), in order
    among equal names of nested models. Variables are matched by their path
    inside the layer (`query/kernel` in a MultiHeadAttention), so
    sublayers' equally named variables stay apart.
    """
    by_name = {}
    for layer in model_graph.flat_layers(target):
        by_name.setdefault(layer.name, []).append(layer)
    for src_layer in model_graph.flat_layers(source):
        dst_layer = by_name[src_layer.name].pop(0)
        dst_vars = {_path_in(dst_layer, v): v for v in dst_layer.weights}
        for var in src_layer.weights:
            dst_vars[_path_in(src_layer, var)].assign(var)
        if isinstance(dst_layer, QuantizeMixin):
            dst_layer.initialize_kernel_quantizer()


def quantize_model(
    model,
    recipe="lsq",
    weight_bits=None,
    activation_bits=None,
    layer_overrides=None,
    strict=False,
    calibration_data=None,
    verbose=0,
    cover_int8_tensors=True,
):
    """Clones `model` with its layers of registered types quantized.

    The layers of registered types (`kq.layers.layer_types()`: Conv1D/2D,
    Separable, Depthwise, Transpose, Dense, EinsumDense and MultiHeadAttention
    through it) quantize their kernel and their input. Every other layer
    (BatchNorm, activations, pooling, Add, Concatenate, Reshape, ...) is
    cloned unchanged and stays float, and each tensor the full-int8 file
    quantizes that no input quantizer covers gets a `kq.layers.QuantIdentity`
    (8-bit; `kq.tensor_coverage`). Float weights are
    copied and the weight steps initialise from them; activation steps
    initialise from `calibration_data`, else from the first training batch
    (predicting or exporting before either is an error). `fit` re-estimates
    the BatchNorm statistics for the trained weights (see
    `kq.recalibrate_batchnorm`). The first and last quantized layers use
    `recipe.first_last_bits` (8 by default).

    Args:
        model: a built Sequential or Functional Keras model (nested models
            and keras.applications topologies included).
        recipe: a preset name (see `kq.configs.PRESETS`), dict or `kq.Recipe`.
        weight_bits: int in [2, 8]; overrides the recipe's.
        activation_bits: int in [2, 8]; overrides the recipe's.
        layer_overrides: `{layer name or regex: {"weight_bits": ...,
            "activation_bits": ..., "weight_quantizer": ...,
            "activation_quantizer": ..., "skip": bool}}`.
        strict: raise on layers with weights that cannot be quantized
            (LSTM, Conv3D, ...) instead of keeping them
            float with a warning.
        calibration_data: optional training inputs (array, `(x, y)` or a
            dataset; the first 512 samples are used) that set the activation
            steps now.
        verbose: 1 prints the per-layer summary (quantized at which bits,
            or float and why; `qmodel.quantization_summary()` returns it).
        cover_int8_tensors: put an 8-bit `QuantIdentity` on each tensor
            the int8 export quantizes that no layer input quantizer covers
            (a residual branch before its Add, the logits), so QAT rounds
            what the int8 file rounds, as tfmot does; and give a tensor that
            several operations read one quantizer (a `QuantIdentity` with
            its first quantized reader's input quantizer, which the readers
            give up), as it has one int8 scale. False quantizes layer inputs
            only (LSQ's convention); the export then calibrates the other
            tensors from data.

    Returns:
        A `kq.training.QuantModel` (a Functional keras.Model) holding the
        recipe and a frozen copy of `model` as `teacher`.

    Example:
        >>> inputs = keras.Input((8, 8, 1))
        >>> hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        >>> model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(hidden)))
        >>> qmodel = kq.quantize_model(model, recipe="lsq", weight_bits=4, activation_bits=4)
        >>> [type(layer).__name__ for layer in qmodel.layers[1:]]
        ['QuantConv2D', 'Flatten', 'QuantDense', 'QuantIdentity']

    The `QuantIdentity` rounds the logits to the 8-bit grid the int8 file
    stores them on.

    Then `qmodel.compile(...)` and `qmodel.fit(...)` as any Keras model
    (docs/qat.md).
    """
    model_graph.check_graph_model(model)
    recipe = get_recipe(recipe)
    changes = {}
    if weight_bits is not None:
        changes["weight_bits"] = check_bits(weight_bits, "weight_bits")
    if activation_bits is not None:
        changes["activation_bits"] = check_bits(activation_bits, "activation_bits")
    if changes:
        recipe = recipe.replace(**changes)
    model, layer_overrides = rewrites.expand_rewrites(  # SeparableConv, MultiHeadAttention
        model, layer_overrides, context={"recipe": recipe, "strict": strict}
    )
    cover = cover_int8_tensors and recipe.fake_quant and recipe.activation_quantizer is not None
    if cover:  # the activations and affine ops TFLite computes as int8 ops of their own
        model = tensor_coverage.expose_int8_operations(model)
    plans = _plan(
        model, recipe, recipe.weight_bits, recipe.activation_bits, layer_overrides, strict
    )
    call_function = None
    if cover:  # QuantIdentity layers; a tensor several operations read gets one quantizer
        plans, call_function = tensor_coverage.cover_tensors(
            model, plans, recipe.activation_quantizer
        )

    def clone_layer(layer):
        config = layer.get_config()
        plan = plans.get(layer.name)
        if plan is None:
            return layer.__class__.from_config(config)
        quant_class = registry.layer_type_of(layer).quant_class
        return quant_class.from_config({**config, **plan.layer_kwargs()})

    clone = keras.models.clone_model(
        model, clone_function=clone_layer, call_function=call_function, recursive=True
    )
    _copy_weights(model, clone)
    inputs = clone.inputs[0] if len(clone.inputs) == 1 else clone.inputs
    qmodel = QuantModel(
        inputs=inputs,
        outputs=clone.outputs,
        name=f"{model.name}_{re.sub(r'[^A-Za-z0-9_.-]', '_', recipe.name)}",
        recipe=recipe,
    )
    teacher = keras.models.clone_model(model)
    teacher.set_weights(model.get_weights())
    qmodel.set_teacher(teacher)
    if calibration_data is not None:
        initialize_activation_steps(qmodel, calibration_data)
    if verbose:
        # Asked for, as Keras' Model.summary(): to standard output (or absl logging).
        qmodel.quantization_summary(print_fn=print_msg)
    return qmodel
